"""A paged KV cache: fixed-size blocks in one preallocated pool, lent to sequences by a block table.

Why our own and not transformers' PagedAttentionCache: the lab needs to export one request's KV as
plain tensors and import it into another engine (disaggregated prefill), to count blocks exactly
for the capacity lesson, and to drive the scheduler itself; the library's cache is tied to its own
scheduler and exposes none of that.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch


class CacheFull(RuntimeError):
    pass


class BlockAllocator:
    """Lends blocks 1..num_blocks; block 0 is never lent (the zeroed padding block)."""

    def __init__(self, num_blocks: int):
        self.num_blocks = num_blocks
        self._free: deque[int] = deque(range(1, num_blocks + 1))

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_used(self) -> int:
        return self.num_blocks - len(self._free)

    def allocate(self, count: int) -> list[int]:
        if count > len(self._free):
            raise CacheFull(f"need {count} KV blocks, {len(self._free)} free")
        return [self._free.popleft() for _ in range(count)]

    def release(self, blocks: list[int]) -> None:
        self._free.extend(blocks)


@dataclass
class KVPayload:
    """One request's KV cache as plain tensors, [layers, tokens, kv_heads, head_dim] each."""
    key: torch.Tensor
    value: torch.Tensor

    @property
    def num_tokens(self) -> int:
        return self.key.shape[1]

    @property
    def nbytes(self) -> int:
        return self.key.nbytes + self.value.nbytes


class PagedKVCache:
    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, num_blocks: int,
                 block_size: int, dtype: torch.dtype, device: torch.device):
        self.block_size = block_size
        self.allocator = BlockAllocator(num_blocks)
        shape = (num_layers, (num_blocks + 1) * block_size, num_kv_heads, head_dim)
        # empty, not zeros: untouched pages of a large pool are never made resident on CPU.
        self.key = torch.empty(shape, dtype=dtype, device=device)
        self.value = torch.empty(shape, dtype=dtype, device=device)
        # Padded attention reads point at block 0; zeros there keep masked scores finite.
        self.key[:, :block_size].zero_()
        self.value[:, :block_size].zero_()

    @property
    def bytes_per_token(self) -> int:
        layers, _, heads, dim = self.key.shape
        return 2 * layers * heads * dim * self.key.element_size()

    @property
    def capacity_tokens(self) -> int:
        return self.allocator.num_blocks * self.block_size

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def grow(self, block_table: list[int], num_tokens: int) -> None:
        """Extend a block table in place so it can hold `num_tokens` tokens."""
        missing = self.blocks_needed(num_tokens) - len(block_table)
        if missing > 0:
            block_table.extend(self.allocator.allocate(missing))

    def can_grow(self, block_table: list[int], num_tokens: int) -> bool:
        return self.blocks_needed(num_tokens) - len(block_table) <= self.allocator.num_free

    def release(self, block_table: list[int]) -> None:
        self.allocator.release(block_table)
        block_table.clear()

    def slots(self, block_table: list[int], start: int, end: int) -> torch.Tensor:
        """Flat pool indices of token positions [start, end) of one sequence."""
        positions = torch.arange(start, end)
        blocks = torch.tensor(block_table, dtype=torch.long)[positions // self.block_size]
        return (blocks * self.block_size + positions % self.block_size).to(self.key.device)

    def write(self, layer: int, slots: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> None:
        self.key[layer].index_copy_(0, slots, key)
        self.value[layer].index_copy_(0, slots, value)

    def export_into(self, block_table: list[int], num_tokens: int, key: torch.Tensor, value: torch.Tensor) -> None:
        """Gather a sequence's KV straight into caller-owned tensors (e.g. shared memory): one copy."""
        slots = self.slots(block_table, 0, num_tokens)
        torch.index_select(self.key, 1, slots, out=key)
        torch.index_select(self.value, 1, slots, out=value)

    def export(self, block_table: list[int], num_tokens: int) -> KVPayload:
        slots = self.slots(block_table, 0, num_tokens)
        return KVPayload(self.key[:, slots], self.value[:, slots])  # advanced indexing copies

    def load(self, block_table: list[int], payload: KVPayload) -> None:
        """Scatter a payload into this pool's blocks: one copy (plus a device move if it lives elsewhere)."""
        slots = self.slots(block_table, 0, payload.num_tokens)
        self.key.index_copy_(1, slots, payload.key.to(self.key.device, self.key.dtype))
        self.value.index_copy_(1, slots, payload.value.to(self.value.device, self.value.dtype))
