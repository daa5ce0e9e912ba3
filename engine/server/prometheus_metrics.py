"""Prometheus metrics of the server, named after vLLM's where they mean the same."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ..cluster.records import TransferRecord, WorkerStatus
from ..metrics import Timing

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0)


class ServerMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.running = Gauge("pdlab:num_requests_running", "Requests in a running batch", registry=r)
        self.waiting = Gauge("pdlab:num_requests_waiting", "Requests waiting to be scheduled", registry=r)
        self.kv_usage = Gauge("pdlab:kv_cache_usage_perc", "Share of KV blocks in use (0-1)", registry=r)
        self.kv_blocks = Gauge("pdlab:kv_cache_blocks_used", "KV blocks in use, all workers", registry=r)
        self.ttft = Histogram("pdlab:time_to_first_token_seconds", "TTFT", buckets=LATENCY_BUCKETS, registry=r)
        self.itl = Histogram("pdlab:inter_token_latency_seconds", "ITL", buckets=LATENCY_BUCKETS, registry=r)
        self.e2e = Histogram("pdlab:e2e_request_latency_seconds", "E2E latency", buckets=LATENCY_BUCKETS,
                             registry=r)
        self.prompt_tokens = Counter("pdlab:prompt_tokens", "Prompt tokens processed", registry=r)
        self.generation_tokens = Counter("pdlab:generation_tokens", "Tokens generated", registry=r)
        self.finished = Counter("pdlab:request_success", "Finished requests", ["finished_reason"], registry=r)
        self.kv_transfer_bytes = Counter("pdlab:kv_transfer_bytes", "KV bytes moved prefill -> decode", registry=r)
        self.kv_transfer_seconds = Counter("pdlab:kv_transfer_seconds", "Time spent moving KV", registry=r)

    def observe_request(self, prompt_tokens: int, timing: Timing, finish_reason: str | None) -> None:
        self.prompt_tokens.inc(prompt_tokens)
        self.generation_tokens.inc(timing.output_tokens)
        self.finished.labels(finish_reason or "unknown").inc()
        if timing.ttft is not None:
            self.ttft.observe(timing.ttft)
            self.e2e.observe(timing.e2e)
        for gap in timing.itls:
            self.itl.observe(gap)

    def update_state(self, workers: list[WorkerStatus], transfers: list[TransferRecord]) -> None:
        loads = [w.load for w in workers if w.alive]
        self.running.set(sum(load.running for load in loads))
        self.waiting.set(sum(load.waiting for load in loads))
        used = sum(load.kv_blocks_used for load in loads)
        total = sum(load.kv_blocks_total for load in loads)
        self.kv_blocks.set(used)
        self.kv_usage.set(used / total if total else 0.0)
        for t in transfers:
            self.kv_transfer_bytes.inc(t.nbytes)
            self.kv_transfer_seconds.inc(t.total_seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
