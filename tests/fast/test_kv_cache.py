"""The block pool: allocation, accounting, and a request's KV exported and imported intact."""
import pytest
import torch

from engine.core.kv_cache import BlockAllocator, CacheFull, PagedKVCache


def small_cache(num_blocks=8, block_size=4) -> PagedKVCache:
    return PagedKVCache(num_layers=2, num_kv_heads=3, head_dim=5, num_blocks=num_blocks,
                        block_size=block_size, dtype=torch.float32, device=torch.device("cpu"))


class TestBlockAllocator:
    def test_allocates_distinct_blocks_and_never_lends_the_padding_block(self):
        alloc = BlockAllocator(5)
        blocks = alloc.allocate(5)
        assert sorted(blocks) == [1, 2, 3, 4, 5]
        assert alloc.num_free == 0 and alloc.num_used == 5

    def test_refuses_more_than_free_and_changes_nothing(self):
        alloc = BlockAllocator(3)
        alloc.allocate(2)
        with pytest.raises(CacheFull, match="need 2 KV blocks, 1 free"):
            alloc.allocate(2)
        assert alloc.num_free == 1

    def test_released_blocks_are_reused(self):
        alloc = BlockAllocator(2)
        a = alloc.allocate(2)
        alloc.release(a)
        assert sorted(alloc.allocate(2)) == sorted(a)


class TestPagedKVCache:
    def test_grow_allocates_whole_blocks_only_when_needed(self):
        cache = small_cache(block_size=4)
        table: list[int] = []
        cache.grow(table, 1)
        assert len(table) == 1
        cache.grow(table, 4)
        assert len(table) == 1
        cache.grow(table, 5)
        assert len(table) == 2
        cache.release(table)
        assert table == [] and cache.allocator.num_used == 0

    def test_slots_follow_the_block_table(self):
        cache = small_cache(block_size=4)
        table = [3, 1]
        assert cache.slots(table, 2, 7).tolist() == [14, 15, 4, 5, 6]

    def test_export_then_load_into_another_cache_round_trips(self):
        src, dst = small_cache(), small_cache()
        table: list[int] = []
        src.grow(table, 6)
        key = torch.randn(2, 6, 3, 5)
        value = torch.randn(2, 6, 3, 5)
        for layer in range(2):
            src.write(layer, src.slots(table, 0, 6), key[layer], value[layer])
        payload = src.export(table, 6)
        assert payload.num_tokens == 6 and payload.nbytes == 2 * 2 * 6 * 3 * 5 * 4
        other: list[int] = []
        dst.grow(other, 6)
        dst.grow(other, 9)  # a different block layout on the receiving side
        dst.load(other, payload)
        assert torch.equal(dst.export(other, 6).key, key) and torch.equal(dst.export(other, 6).value, value)

    def test_bytes_per_token_counts_kv_heads(self):
        assert small_cache().bytes_per_token == 2 * 2 * 3 * 5 * 4


class TestContiguity:
    def test_growth_continues_right_after_the_last_block(self):
        cache = small_cache(num_blocks=16, block_size=4)
        a: list[int] = []
        b: list[int] = []
        cache.grow(a, 4)
        cache.grow(b, 4)         # b takes the block after a's
        cache.grow(a, 12)        # a cannot continue in place, so it takes a fresh run...
        assert cache.contiguous_span(a, 12) is None
        c: list[int] = []
        cache.grow(c, 8)
        cache.grow(c, 16)        # ...while c, with free blocks after it, stays one run
        assert c == list(range(c[0], c[0] + 4))
        assert cache.contiguous_span(c, 13) == (c[0] * 4, c[0] * 4 + 13)

    def test_a_large_request_gets_one_run_even_in_a_fragmented_pool(self):
        alloc = BlockAllocator(10)
        held = alloc.allocate(10)
        alloc.release([held[1], held[3], held[6], held[7], held[8]])  # free: 2, 4, 7, 8, 9
        assert alloc.allocate(3) == [7, 8, 9]
        assert sorted(alloc.allocate(2)) == [2, 4]   # no run of two left: lowest free blocks

    def test_out_of_order_table_is_not_taken_for_a_span(self):
        cache = small_cache(block_size=4)
        assert cache.contiguous_span([1, 3, 2, 4], 16) is None
        assert cache.contiguous_span([2, 3], 5) == (8, 13)
