"""The prefix cache: a shared system prompt is prefilled once, until its entry expires or is evicted."""
import time

import pytest
import torch

from engine.core.config import SamplingParams
from engine.core.kv_cache import KVPayload
from engine.core.prefix_store import PrefixStore
from tests.helpers import greedy_reference, run_to_end


def kv(tokens: int) -> KVPayload:
    return KVPayload(torch.randn(2, tokens, 3, 4), torch.randn(2, tokens, 3, 4))


def exporter(payload: KVPayload):
    """What the engine passes: a copy of the first n tokens of a request's KV."""
    return lambda n: KVPayload(payload.key[:, :n].clone(), payload.value[:, :n].clone())


class TestPrefixStore:
    def test_finds_the_longest_stored_whole_block_prefix(self):
        store = PrefixStore(capacity_tokens=100, ttl_s=60, block_size=4)
        prompt = list(range(10))
        stored = kv(10)
        store.store(prompt, exporter(stored), now=0.0)          # keeps the first 8 tokens (two whole blocks)
        length, found = store.lookup(prompt + [99, 98], now=1.0)
        assert length == 8 and torch.equal(found.key, stored.key[:, :8])
        assert store.lookup([5, 6, 7, 8, 9], now=1.0) == (0, None)
        assert (store.stats.hits, store.stats.misses, store.stats.hit_tokens) == (1, 1, 8)

    def test_entries_expire_after_their_ttl_since_last_use(self):
        store = PrefixStore(capacity_tokens=100, ttl_s=10, block_size=4)
        store.store(list(range(8)), exporter(kv(8)), now=0.0)
        assert store.lookup(list(range(9)), now=9.0)[0] == 8    # used at 9 s: lives until 19 s
        assert store.lookup(list(range(9)), now=18.0)[0] == 8
        assert store.lookup(list(range(9)), now=28.5)[0] == 0
        assert store.stats.expired == 2 and store.tokens == 0    # both blocks

    def test_least_recently_used_entries_are_evicted_at_capacity(self):
        store = PrefixStore(capacity_tokens=16, ttl_s=60, block_size=4)
        a, b, c = [1] * 8, [2] * 8, [3] * 8
        store.store(a, exporter(kv(8)), now=0.0)
        store.store(b, exporter(kv(8)), now=1.0)
        store.lookup(a + [0], now=2.0)                 # a is now the most recently used
        store.store(c, exporter(kv(8)), now=3.0)                 # over capacity: b goes
        assert store.lookup(b + [0], now=4.0)[0] == 0
        assert store.lookup(a + [0], now=4.0)[0] == 8 and store.lookup(c + [0], now=4.0)[0] == 8
        assert store.stats.evicted == 2 and store.tokens == 16   # b's two blocks

    def test_bad_settings_are_refused(self):
        with pytest.raises(ValueError, match="ttl > 0"):
            PrefixStore(capacity_tokens=10, ttl_s=0, block_size=4)


SYSTEM = "You are a careful assistant for a serving course. " * 12


def ask(engine, loaded, question):
    ids = list(loaded.tokenizer.apply_chat_template(
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
        add_generation_prompt=True, tokenize=True)["input_ids"])
    rid = engine.add_request(ids, SamplingParams(max_tokens=10, ignore_eos=True))
    tokens = run_to_end(engine)[rid]
    return ids, tokens, engine.finished[-1]


@pytest.mark.parametrize("policy", ["prefill-first", "chunked"])
def test_shared_system_prompt_is_reused_and_output_is_unchanged(make_engine, loaded, reference_model, policy):
    engine = make_engine(policy=policy, chunk_size=64, prefix_cache_tokens=2048, prefix_cache_ttl_s=60)
    ids_a, _, first = ask(engine, loaded, "What is prefill?")
    assert first.cached_tokens == 0
    steps_before = len(engine.steps)
    ids_b, tokens_b, second = ask(engine, loaded, "And what is decode?")
    assert second.cached_tokens >= len(SYSTEM) // 8          # most of the system prompt came from the cache
    assert second.cached_tokens % engine.config.block_size == 0
    fed = sum(s.num_tokens for s in engine.steps[steps_before:] if s.kind != "decode")
    assert fed <= len(ids_b) - second.cached_tokens + 10
    assert tokens_b == greedy_reference(reference_model, ids_b, 10)
    assert engine.cache.allocator.num_used == 0


def test_an_expired_prefix_is_prefilled_again(make_engine, loaded):
    engine = make_engine(prefix_cache_tokens=2048, prefix_cache_ttl_s=5.0)
    ask(engine, loaded, "What is prefill?")
    assert ask(engine, loaded, "What is decode?")[2].cached_tokens > 0
    time.sleep(5.5)
    assert ask(engine, loaded, "What is a KV cache?")[2].cached_tokens == 0
    assert engine.prefix_store.stats.expired >= 1


def test_a_prefix_prefilled_on_one_worker_is_read_from_the_shared_disk_tier_by_another(tmp_path, chat,
                                                                                     reference_model):
    """Two colocated worker processes naming one KV store folder: the second request, routed to the other
    worker, loads the first's whole blocks from disk, and its greedy answer is the plain model's."""
    from engine.cluster.cluster import Cluster
    from engine.cluster.topology import Topology
    from engine.core.config import EngineConfig

    system = "You are a careful assistant for a shipping company. " * 12
    first = chat(system + "Where is my parcel?")
    second = chat(system + "How do I return a parcel?")
    params = SamplingParams(max_tokens=8, ignore_eos=True)
    config = EngineConfig(kv_cache_tokens=2048, kv_store_folder=str(tmp_path / "kv-store"))
    with Cluster(Topology("colocated", workers=2), config) as cluster:
        one = cluster.submit(first, SamplingParams(max_tokens=200, ignore_eos=True))
        deadline = time.monotonic() + 300
        while not one.token_ids and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)   # the writer thread puts the prompt's blocks on disk
        other = cluster.submit(second, params)   # to the least busy worker: not the one still answering `first`
        other.result(timeout=300)
        one.cancel()
        one.wait(60)
        records = {r.request_id: r for r in cluster.requests}
    assert records[one.request_id].worker != records[other.request_id].worker
    common = next(i for i, (a, b) in enumerate(zip(first, second)) if a != b)
    hit = records[other.request_id]
    assert hit.cache_tier == "disk" and hit.cached_tokens == common // 16 * 16 > 100   # every shared whole block
    assert other.token_ids == greedy_reference(reference_model, second, 8)
