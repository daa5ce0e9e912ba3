"""Attention over the paged KV cache, plugged into transformers' attention interface.

The model runs one packed forward per step: all fed tokens of all sequences in one row. The model
code (Llama, Qwen2, Mistral, ...) computes q, k, v and RoPE as usual and then calls this function,
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


def paged_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    batch: StepBatch = kwargs["step_batch"]
    cache, layer = batch.cache, module.layer_idx
    # query [1, heads, T, dim]; key/value [1, kv_heads, T, dim] -> rows [T, kv_heads, dim]
    new_key, new_value = key[0].transpose(0, 1), value[0].transpose(0, 1)
    cache.write(layer, batch.write_slots, new_key, new_value)
    if batch.after_layer is not None:
        batch.after_layer(layer)
    out = torch.empty_like(query[0].transpose(0, 1))  # [T, heads, dim]

    for group in batch.decodes:
        rows = slice(group.start, group.start + group.size)
        k = read_context(cache.key[layer], group.context)
        v = read_context(cache.value[layer], group.context)
        if k.dim() == 3:  # one sequence's span: [tokens, kv_heads, dim]
            k, v = k.unsqueeze(0), v.unsqueeze(0)
        k, v = k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)      # [n, kv_heads, width, dim]
        q = query[0, :, rows].transpose(0, 1).unsqueeze(2)      # [n, heads, 1, dim]
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=group.mask, scale=scaling, enable_gqa=True)
        out[rows] = o.squeeze(2)

    for seg in batch.prefills:
        rows = slice(seg.start, seg.start + seg.length)
        q = query[:, :, rows]
        if seg.context is None:
            k, v = key[:, :, rows], value[:, :, rows]
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling, enable_gqa=True)
        else:
            k = read_context(cache.key[layer], seg.context).transpose(0, 1).unsqueeze(0)
            v = read_context(cache.value[layer], seg.context).transpose(0, 1).unsqueeze(0)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=seg.mask, scale=scaling, enable_gqa=True)
        out[rows] = o[0].transpose(0, 1)
    return out.unsqueeze(0), None


def register_paged_attention() -> None:
    AttentionInterface.register(ATTENTION_NAME, paged_attention_forward)
