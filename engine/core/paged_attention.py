"""Attention over the paged KV cache, for the fused decoder and transformers' attention interface.

The model runs one packed forward per step: all fed tokens of all sequences in one row. The model
code (fused_decoder.py, or transformers' own) computes q, k, v and RoPE and then calls this function,
which writes the new k, v into the pool and attends each sequence only to its own tokens:
- decode tokens (one per sequence) are batched into SDPA calls over their gathered contexts, grouped
  by context length so that one 4000-token context does not pad every short one to 4000;
- a prompt chunk with no earlier context attends to itself with a causal kernel, no gather;
- a prompt chunk after earlier context (chunked prefill, recompute) gathers that context.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

from .kv_cache import PagedKVCache

ATTENTION_NAME = "pdlab_paged"


Context = "torch.Tensor | tuple[int, int]"  # pool slots to gather, or a contiguous (start, end) span


def read_context(pool: torch.Tensor, context) -> torch.Tensor:
    """[..., tokens, kv_heads, dim]: a view for a contiguous span, else a gather (index_select: about
    3x faster on CPU than advanced indexing with the same slots)."""
    if isinstance(context, tuple):
        return pool[context[0]:context[1]]
    return pool.index_select(0, context.reshape(-1)).view(*context.shape, *pool.shape[1:])


@dataclass
class PrefillSegment:
    start: int                     # first row of this chunk in the packed batch
    length: int                    # tokens in this chunk
    context: object = None         # Context of all tokens incl. this chunk; None if no earlier context
    mask: torch.Tensor | None = None   # [length, context] causal mask with offset; None if fresh


@dataclass
class DecodeGroup:
    """Decode tokens attended together: one long sequence over a contiguous span (no copy), or
    several of similar context length over gathered, padded contexts."""
    start: int                     # first row in the packed batch
    size: int                      # sequences (rows) in the group
    context: object                # a (start, end) span for one sequence, or [n, width] slots
    mask: torch.Tensor | None      # [n, 1, 1, width] bool for padded groups


@dataclass
class StepBatch:
    """What the attention function needs to know about one packed step."""
    cache: PagedKVCache
    write_slots: torch.Tensor                    # pool slot of every fed token, in packed order
    decodes: list[DecodeGroup] = field(default_factory=list)   # decode rows come first
    prefills: list[PrefillSegment] = field(default_factory=list)
    after_layer: Callable[[int], None] | None = None   # told as soon as a layer's KV of this step is in the pool


def decode_attention_by_matmul(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                               scaling: float | None) -> torch.Tensor:
    """One query row per sequence, as two batched matmuls with the softmax in float32. PyTorch's CPU
    SDPA kernel is slow for bf16 decodes: measured on a 2-core AMD EPYC, 6 sequences over 600 tokens
    took 2.0 ms through it and 0.26 ms this way (in float32 the kernel is as fast, and is kept). The
    compiled decode step (compiled_decode.py) attends through this function in both dtypes.
    q [n, heads, 1, dim]; k, v [n, kv_heads, width, dim]; mask [n, 1, 1, width] or None -> [n, heads, dim]."""
    n, heads, _, dim = q.shape
    kv_heads = k.shape[1]
    grouped = q.view(n, kv_heads, heads // kv_heads, dim)       # the query heads that share each KV head
    scores = torch.matmul(grouped, k.transpose(-1, -2)).float() * (scaling if scaling is not None else dim ** -0.5)
    if mask is not None:
        scores = scores.masked_fill(~mask.view(n, 1, 1, -1), float("-inf"))
    return torch.matmul(torch.softmax(scores, dim=-1).to(v.dtype), v).view(n, heads, dim)


def paged_attention(batch: StepBatch, layer: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    scaling: float | None) -> torch.Tensor:
    """One layer's attention for the packed step: query [T, heads, dim], key/value [T, kv_heads, dim]
    (the new tokens' rows) in; [T, heads, dim] out."""
    cache = batch.cache
    cache.write(layer, batch.write_slots, key, value)
    if batch.after_layer is not None:
        batch.after_layer(layer)
    out = torch.empty(query.shape, dtype=query.dtype, device=query.device)

    for group in batch.decodes:
        rows = slice(group.start, group.start + group.size)
        k = read_context(cache.key[layer], group.context)
        v = read_context(cache.value[layer], group.context)
        if k.dim() == 3:  # one sequence's span: [tokens, kv_heads, dim]
            k, v = k.unsqueeze(0), v.unsqueeze(0)
        k, v = k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)      # [n, kv_heads, width, dim]
        q = query[rows].unsqueeze(2)                             # [n, heads, 1, dim]
        if q.device.type == "cpu" and q.dtype != torch.float32:
            out[rows] = decode_attention_by_matmul(q, k, v, group.mask, scaling)
        else:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=group.mask, scale=scaling, enable_gqa=True)
            out[rows] = o.squeeze(2)

    for seg in batch.prefills:
        rows = slice(seg.start, seg.start + seg.length)
        q = query[rows].transpose(0, 1).unsqueeze(0)             # [1, heads, length, dim]
        if seg.context is None:
            k, v = key[rows].transpose(0, 1).unsqueeze(0), value[rows].transpose(0, 1).unsqueeze(0)
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling, enable_gqa=True)
        else:
            k = read_context(cache.key[layer], seg.context).transpose(0, 1).unsqueeze(0)
            v = read_context(cache.value[layer], seg.context).transpose(0, 1).unsqueeze(0)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=seg.mask, scale=scaling, enable_gqa=True)
        out[rows] = o[0].transpose(0, 1)
    return out


def paged_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers' attention interface: query [1, heads, T, dim], key/value [1, kv_heads, T, dim]."""
    out = paged_attention(kwargs["step_batch"], module.layer_idx, query[0].transpose(0, 1),
                          key[0].transpose(0, 1), value[0].transpose(0, 1), scaling)
    return out.unsqueeze(0), None


def register_paged_attention() -> None:
    AttentionInterface.register(ATTENTION_NAME, paged_attention_forward)
