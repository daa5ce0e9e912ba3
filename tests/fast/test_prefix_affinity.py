"""Cache-aware routing: a prompt goes where its prefix was computed, unless the loads are too uneven."""
import pytest

from engine.cluster.prefix_affinity import IMBALANCE, PrefixAffinity
from engine.cluster.topology import Mode, Topology
from tests.fast.in_process import InProcessCluster

SYSTEM = list(range(1, 50))   # three whole blocks and one token


def test_a_prompt_goes_to_the_worker_that_got_its_first_block_unless_loads_are_uneven():
    affinity = PrefixAffinity(16)
    affinity.routed(SYSTEM + [60], "worker-1")
    assert affinity.choose(SYSTEM + [61, 62], {"worker-0": 0, "worker-1": 1}) == "worker-1"
    assert affinity.choose(SYSTEM + [61], {"worker-0": 0, "worker-1": IMBALANCE + 1}) == "worker-0"
    assert affinity.choose([9] * 40, {"worker-0": 1, "worker-1": 0}) == "worker-1"   # nothing known: least loaded
    assert affinity.choose([9] * 10, {"worker-0": 1, "worker-1": 0}) == "worker-1"   # no whole block at all


@pytest.mark.parametrize("cache_aware", [False, True])
def test_with_cache_aware_routing_the_second_prompt_finds_its_prefix_in_memory(cache_aware):
    c = InProcessCluster(Topology(Mode.COLOCATED, workers=2), cache_aware=cache_aware, prefix_cache_tokens=256)
    try:
        first = c.submit(SYSTEM + [60], max_tokens=20)
        c.pump(2)   # its prefill, and its prefix stored on the worker
        second = c.submit(SYSTEM + [61])   # the first still decodes: least loaded is the other worker
        c.run(first, second)
        records = {r.request_id: r for r in c.router.requests}
        same = records[first.request_id].worker == records[second.request_id].worker
        assert same == cache_aware
        assert records[second.request_id].cached_tokens == (48 if cache_aware else 0)
    finally:
        c.close()
