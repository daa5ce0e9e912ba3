"""/metrics counts prefix-cache hits as vLLM does, and by the tier they came from."""
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
