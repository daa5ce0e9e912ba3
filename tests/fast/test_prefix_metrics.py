"""/metrics counts prefix-cache hits as vLLM does, and by the tier they came from."""
from engine.cluster.messages import WorkerLoad
from engine.cluster.records import WorkerStatus
from engine.cluster.topology import Role
from engine.core.sequence import RequestRecord
from engine.server.prometheus_metrics import ServerMetrics


def test_prefix_hits_are_counted_in_all_and_by_tier():
    metrics = ServerMetrics("tiny", block_size=16, blocks_per_worker=32)
    records = [RequestRecord("a", 100, 0.0, cached_tokens=0), RequestRecord("b", 100, 0.0, cached_tokens=64,
                                                                             cache_tier="memory"),
               RequestRecord("c", 100, 0.0, cached_tokens=96, cache_tier="disk")]
    metrics.update_state([], [], records, [])
    text = metrics.render().decode()
    assert 'vllm:prefix_cache_queries_total{model_name="tiny"} 300.0' in text
    assert 'vllm:prefix_cache_hits_total{model_name="tiny"} 160.0' in text
    assert 'pdlab:prefix_cache_hits_by_tier_total{model_name="tiny",tier="memory"} 64.0' in text
    assert 'pdlab:prefix_cache_hits_by_tier_total{model_name="tiny",tier="disk"} 96.0' in text


def worker(name: str, pid: int, prefix_cache: dict) -> WorkerStatus:
    return WorkerStatus(name, Role.COLOCATED, pid, True, "cpu", "", WorkerLoad(prefix_cache=prefix_cache), 0)


def value(text: str, series: str) -> float:
    return float(next(line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith(series + " ")))


def test_each_tier_reports_its_bytes_lookups_and_evictions_counted_once_across_reports_and_restarts():
    metrics = ServerMetrics("tiny", block_size=16, blocks_per_worker=32)
    a = {"memory": {"bytes": 100, "hits": 2, "misses": 1, "evictions": 0},
         "disk": {"bytes": 5000, "hits": 1, "misses": 2, "evictions": 3, "rejected": 1}}
    b = {"memory": {"bytes": 50, "hits": 1, "misses": 0, "evictions": 4},
         "disk": {"bytes": 4000, "hits": 0, "misses": 1, "evictions": 0, "rejected": 0}}
    metrics.update_state([worker("w0", 1, a), worker("w1", 2, b)], [], [], [])
    metrics.update_state([worker("w0", 1, a), worker("w1", 2, b)], [], [], [])   # the same totals again
    restarted = {"memory": {"bytes": 0, "hits": 1, "misses": 0, "evictions": 0}}
    metrics.update_state([worker("w0", 1, a), worker("w1", 3, restarted)], [], [], [])
    text = metrics.render().decode()
    m = 'model_name="tiny"'
    assert value(text, f'pdlab:prefix_cache_bytes{{{m},tier="memory"}}') == 100      # w0's 100 + restarted w1's 0
    assert value(text, f'pdlab:prefix_cache_bytes{{{m},tier="disk"}}') == 5000       # one folder: not summed
    assert value(text, f'pdlab:prefix_cache_lookups_total{{{m},result="hit",tier="memory"}}') == 2 + 1 + 1
    assert value(text, f'pdlab:prefix_cache_lookups_total{{{m},result="miss",tier="disk"}}') == 2 + 1
    assert value(text, f'pdlab:prefix_cache_evictions_total{{{m},tier="memory"}}') == 4
    assert value(text, f'pdlab:prefix_cache_rejected_files_total{{{m}}}') == 1
