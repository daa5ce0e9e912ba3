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

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

from .kv_cache import PagedKVCache

ATTENTION_NAME = "pdlab_paged"


@dataclass
class PrefillSegment:
    start: int                     # first row of this chunk in the packed batch
    length: int                    # tokens in this chunk
    context_slots: torch.Tensor | None  # pool slots of all context incl. this chunk; None if fresh
    mask: torch.Tensor | None      # [length, context] causal mask with offset; None if fresh


@dataclass
class DecodeGroup:
    """Decode tokens of similar context length, attended in one padded SDPA call."""
    start: int                     # first row in the packed batch
    slots: torch.Tensor            # [n, width] pool slots of each sequence's context (padded)
    mask: torch.Tensor             # [n, 1, 1, width] bool, True on real context


@dataclass
class StepBatch:
    """What the attention function needs to know about one packed step."""
    cache: PagedKVCache
    write_slots: torch.Tensor                    # pool slot of every fed token, in packed order
    decodes: list[DecodeGroup] = field(default_factory=list)   # decode rows come first
    prefills: list[PrefillSegment] = field(default_factory=list)


def paged_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    batch: StepBatch = kwargs["step_batch"]
    cache, layer = batch.cache, module.layer_idx
    # query [1, heads, T, dim]; key/value [1, kv_heads, T, dim] -> rows [T, kv_heads, dim]
    new_key, new_value = key[0].transpose(0, 1), value[0].transpose(0, 1)
    cache.write(layer, batch.write_slots, new_key, new_value)
    out = torch.empty_like(query[0].transpose(0, 1))  # [T, heads, dim]

    for group in batch.decodes:
        rows = slice(group.start, group.start + group.slots.shape[0])
        k = cache.key[layer][group.slots].permute(0, 2, 1, 3)   # [n, kv_heads, width, dim]
        v = cache.value[layer][group.slots].permute(0, 2, 1, 3)
        q = query[0, :, rows].transpose(0, 1).unsqueeze(2)      # [n, heads, 1, dim]
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=group.mask, scale=scaling, enable_gqa=True)
        out[rows] = o.squeeze(2)

    for seg in batch.prefills:
        rows = slice(seg.start, seg.start + seg.length)
        q = query[:, :, rows]
        if seg.context_slots is None:
            k, v = key[:, :, rows], value[:, :, rows]
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling, enable_gqa=True)
        else:
            k = cache.key[layer][seg.context_slots].transpose(0, 1).unsqueeze(0)
            v = cache.value[layer][seg.context_slots].transpose(0, 1).unsqueeze(0)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=seg.mask, scale=scaling, enable_gqa=True)
        out[rows] = o[0].transpose(0, 1)
    return out.unsqueeze(0), None


def register_paged_attention() -> None:
    AttentionInterface.register(ATTENTION_NAME, paged_attention_forward)
