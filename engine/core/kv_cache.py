"""A paged KV cache: fixed-size blocks in one preallocated pool, lent to sequences by a block table.

Why our own and not transformers' PagedAttentionCache: the lab needs to export one request's KV as
plain tensors and import it into another engine (disaggregated prefill), to count blocks exactly
for the capacity lesson, and to drive the scheduler itself; the library's cache is tied to its own
scheduler and exposes none of that.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


class CacheFull(RuntimeError):
    pass


class BlockAllocator:
    """Lends blocks 1..num_blocks; block 0 is never lent (the zeroed padding block).

    It prefers contiguous runs: a sequence whose blocks are consecutive can be attended as a plain
    view of the pool, with no gather (for a 4000-token context that is ~5x faster per decode step).
    """

    def __init__(self, num_blocks: int):
        self.num_blocks = num_blocks
        self._free: set[int] = set(range(1, num_blocks + 1))

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_used(self) -> int:
        return self.num_blocks - len(self._free)

    def allocate(self, count: int, after: int | None = None) -> list[int]:
        """`count` blocks: right after block `after` if those are free, else the first free run
        of that length, else the lowest free blocks."""
        if count > len(self._free):
            raise CacheFull(f"need {count} KV blocks, {len(self._free)} free")
        wanted = range(after + 1, after + 1 + count) if after is not None else None
        if wanted is None or not all(b in self._free for b in wanted):
            wanted = self._first_run(count)
        blocks = list(wanted) if wanted is not None else sorted(self._free)[:count]
        self._free.difference_update(blocks)
        return blocks

    def _first_run(self, count: int) -> range | None:
        run_start, run_len, previous = None, 0, None
        for b in sorted(self._free):
            if previous is not None and b == previous + 1:
                run_len += 1
            else:
                run_start, run_len = b, 1
            if run_len == count:
                return range(run_start, run_start + count)
            previous = b
        return None

    def release(self, blocks: list[int]) -> None:
        self._free.update(blocks)


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
        # Zeroed up front, as a serving engine reserves its KV memory at start: no page faults
        # mid-run (a 4000-token import would otherwise stall decoding while pages are mapped),
        # and block 0, where padded attention reads point, holds finite values.
        self.key = torch.zeros(shape, dtype=dtype, device=device)
        self.value = torch.zeros(shape, dtype=dtype, device=device)

    @property
    def num_layers(self) -> int:
        return self.key.shape[0]

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
            block_table.extend(self.allocator.allocate(missing, after=block_table[-1] if block_table else None))

    def can_grow(self, block_table: list[int], num_tokens: int) -> bool:
        return self.blocks_needed(num_tokens) - len(block_table) <= self.allocator.num_free

    def release(self, block_table: list[int]) -> None:
        self.allocator.release(block_table)
        block_table.clear()

    def contiguous_span(self, block_table: list[int], num_tokens: int) -> tuple[int, int] | None:
        """(first slot, end slot) if the first `num_tokens` tokens lie in consecutive blocks."""
        used = block_table[: self.blocks_needed(num_tokens)]
        if used and used == list(range(used[0], used[0] + len(used))):
            first = used[0] * self.block_size
            return first, first + num_tokens
        return None

    def slots(self, block_table: list[int], start: int, end: int) -> torch.Tensor:
        """Flat pool indices of token positions [start, end) of one sequence."""
        positions = torch.arange(start, end)
        blocks = torch.tensor(block_table, dtype=torch.long)[positions // self.block_size]
        return (blocks * self.block_size + positions % self.block_size).to(self.key.device)

    def write(self, layer: int, slots: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> None:
        self.key[layer].index_copy_(0, slots, key)
        self.value[layer].index_copy_(0, slots, value)

    def write_layers(self, slots: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> None:
        """Every layer's rows at once: key, value [layers, len(slots), kv_heads, head_dim]."""
        self.key.index_copy_(1, slots, key)
        self.value.index_copy_(1, slots, value)

    def export_into(self, block_table: list[int], num_tokens: int, key: torch.Tensor, value: torch.Tensor) -> None:
        """Gather a sequence's KV straight into caller-owned tensors (e.g. shared memory): one copy from a
        pool on the same device; from a GPU pool into host memory, a gather on the GPU and one copy down."""
        slots = self.slots(block_table, 0, num_tokens)
        for pool, out in ((self.key, key), (self.value, value)):
            if out.device == pool.device:
                torch.index_select(pool, 1, slots, out=out)
            else:
                out.copy_(pool.index_select(1, slots))

    def export(self, block_table: list[int], num_tokens: int) -> KVPayload:
        slots = self.slots(block_table, 0, num_tokens)
        return KVPayload(self.key[:, slots], self.value[:, slots])  # advanced indexing copies

    def load(self, block_table: list[int], payload: KVPayload, layers: slice = slice(None)) -> None:
        """Scatter (some layers of) a payload into this pool's blocks: one copy, plus a device move
        if the payload lives elsewhere."""
        slots = self.slots(block_table, 0, payload.num_tokens)
        for pool, part in ((self.key, payload.key), (self.value, payload.value)):
            pool[layers].index_copy_(1, slots, part[layers].to(pool.device, pool.dtype))
