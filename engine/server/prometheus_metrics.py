"""Prometheus metrics of the server under vLLM's names (the `vllm:` prefix and a `model_name` label), so
that vLLM's Grafana dashboards and alerts read them unchanged; what only this lab has (KV transfers
between workers) is under `pdlab:`. Names and meanings follow vLLM 0.32's production metrics docs.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ..cluster.records import TransferRecord, WorkerStatus
from ..core.sequence import RequestRecord, StepRecord
from ..metrics import Timing

# Up to 2560 s, as vLLM's: a long prompt on a busy CPU takes minutes, and must not fall off the last bucket.
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                   20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000)
STEP_TOKEN_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)


class ServerMetrics:
    def __init__(self, model_name: str, block_size: int, blocks_per_worker: int):
        self.registry = r = CollectorRegistry()
        label = ["model_name"]

        def gauge(name, doc, labels=()):
            return Gauge(name, doc, label + list(labels), registry=r)

        def counter(name, doc, labels=()):
            return Counter(name, doc, label + list(labels), registry=r)

        def histogram(name, doc, buckets):
            return Histogram(name, doc, label, buckets=buckets, registry=r)

        self.model = model_name
        self.running = gauge("vllm:num_requests_running", "Requests in a running batch")
        self.waiting = gauge("vllm:num_requests_waiting", "Requests waiting to be scheduled (or for their KV)")
        self.kv_usage = gauge("vllm:kv_cache_usage_perc", "Share of KV blocks in use, all workers (0-1)")
        # The older names of the two above that vLLM's example Grafana dashboard still queries
        # (examples/online_serving/prometheus_grafana/grafana.json): the same measurements.
        self.kv_usage_old = gauge("vllm:gpu_cache_usage_perc", "Older name of vllm:kv_cache_usage_perc")
        self.ttft = histogram("vllm:time_to_first_token_seconds", "Time to first token", LATENCY_BUCKETS)
        self.itl = histogram("vllm:inter_token_latency_seconds", "Every gap between two tokens of a stream",
                             LATENCY_BUCKETS)
        self.itl_old = histogram("vllm:time_per_output_token_seconds", "Older name of vllm:inter_token_latency_seconds",
                                 LATENCY_BUCKETS)
        self.tpot = histogram("vllm:request_time_per_output_token_seconds", "Per request: (E2E - TTFT) / (tokens - 1)",
                              LATENCY_BUCKETS)
        self.e2e = histogram("vllm:e2e_request_latency_seconds", "End-to-end request latency", LATENCY_BUCKETS)
        self.queue = histogram("vllm:request_queue_time_seconds", "Waiting before the first step", LATENCY_BUCKETS)
        self.prefill = histogram("vllm:request_prefill_time_seconds", "First step to first token", LATENCY_BUCKETS)
        self.decode = histogram("vllm:request_decode_time_seconds", "First token to the last", LATENCY_BUCKETS)
        self.inference = histogram("vllm:request_inference_time_seconds", "First step to the last", LATENCY_BUCKETS)
        self.prompt_tokens = counter("vllm:prompt_tokens", "Prompt tokens processed")
        self.generation_tokens = counter("vllm:generation_tokens", "Tokens generated")
        self.request_prompt = histogram("vllm:request_prompt_tokens", "Prompt tokens per request", TOKEN_BUCKETS)
        self.request_generation = histogram("vllm:request_generation_tokens", "Output tokens per request",
                                            TOKEN_BUCKETS)
        self.max_generation = histogram("vllm:request_max_num_generation_tokens",
                                        "Per prompt: the longest of its n choices, in tokens", TOKEN_BUCKETS)
        self.iteration_tokens = histogram("vllm:iteration_tokens_total", "Tokens per engine step", STEP_TOKEN_BUCKETS)
        self.success = counter("vllm:request_success", "Finished requests", ["finished_reason"])
        self.preemptions = counter("vllm:num_preemptions", "Requests preempted (their KV freed, to be recomputed)")
        self.prefix_queries = counter("vllm:prefix_cache_queries", "Prompt tokens looked up in the prefix cache")
        self.prefix_hits = counter("vllm:prefix_cache_hits", "Prompt tokens found in the prefix cache")
        self.tier_bytes = gauge("pdlab:prefix_cache_bytes", "Bytes each prefix cache tier holds (memory: all workers; "
                                "disk: the folder they share)", ["tier"])
        self.tier_lookups = counter("pdlab:prefix_cache_lookups", "Prefix lookups per tier and their result",
                                    ["tier", "result"])
        self.tier_evictions = counter("pdlab:prefix_cache_evictions", "Blocks a tier dropped (evicted or expired)",
                                      ["tier"])
        self.tier_rejected = counter("pdlab:prefix_cache_rejected_files",
                                     "Disk tier files refused: truncated, corrupted, or of another model or layout")
        self._tier_seen: dict[tuple, int] = {}   # (worker, pid, tier, count) -> its last reported total
        self.prefix_hits_by_tier = counter("pdlab:prefix_cache_hits_by_tier",
                                           "Prompt tokens found in the prefix cache, by the tier they came from "
                                           "(memory: the worker's own; disk: the folder every worker shares)",
                                           ["tier"])
        info = gauge("vllm:cache_config_info", "KV cache configuration", ["block_size", "num_gpu_blocks"])
        info.labels(model_name, str(block_size), str(blocks_per_worker)).set(1)
        self.kv_blocks = gauge("pdlab:kv_cache_blocks_used", "KV blocks in use, all workers")
        self.kv_transfer_bytes = counter("pdlab:kv_transfer_bytes", "KV bytes moved prefill -> decode")
        self.kv_transfer_seconds = counter("pdlab:kv_transfer_seconds", "Time spent moving KV")

    def observe_request(self, prompt_tokens: int, timing: Timing, finish_reason: str | None) -> None:
        """A request as its client saw it (latencies measured where the tokens arrive)."""
        m = self.model
        self.prompt_tokens.labels(m).inc(prompt_tokens)
        self.generation_tokens.labels(m).inc(timing.output_tokens)
        self.request_prompt.labels(m).observe(prompt_tokens)
        self.request_generation.labels(m).observe(timing.output_tokens)
        self.success.labels(m, finish_reason or "unknown").inc()
        if timing.ttft is not None:
            self.ttft.labels(m).observe(timing.ttft)
            self.e2e.labels(m).observe(timing.e2e)
        if timing.tpot is not None:
            self.tpot.labels(m).observe(timing.tpot)
        for gap in timing.itls:
            self.itl.labels(m).observe(gap)
            self.itl_old.labels(m).observe(gap)

    def observe_choices(self, output_tokens: list[int]) -> None:
        """The choices of one prompt (its n), once they have ended."""
        self.max_generation.labels(self.model).observe(max(output_tokens))

    def update_state(self, workers: list[WorkerStatus], transfers: list[TransferRecord],
                     records: list[RequestRecord], steps: list[StepRecord]) -> None:
        """The engine's view since the last scrape: worker load, new transfers, finished requests'
        phases (as their last worker saw them: a disaggregated request's import counts as its
        prefill there), and the tokens of each step."""
        m = self.model
        loads = [w.load for w in workers if w.alive]
        self.running.labels(m).set(sum(load.running for load in loads))
        self.waiting.labels(m).set(sum(load.waiting for load in loads))
        used = sum(load.kv_blocks_used for load in loads)
        total = sum(load.kv_blocks_total for load in loads)
        self.kv_blocks.labels(m).set(used)
        self.kv_usage.labels(m).set(used / total if total else 0.0)
        self.kv_usage_old.labels(m).set(used / total if total else 0.0)
        self._prefix_tiers([w for w in workers if w.alive])
        for t in transfers:
            self.kv_transfer_bytes.labels(m).inc(t.nbytes)
            self.kv_transfer_seconds.labels(m).inc(t.total_seconds)
        for rec in records:
            self.preemptions.labels(m).inc(rec.preemptions)
            self.prefix_queries.labels(m).inc(rec.prompt_tokens)
            self.prefix_hits.labels(m).inc(rec.cached_tokens)
            if rec.cached_tokens:
                self.prefix_hits_by_tier.labels(m, rec.cache_tier).inc(rec.cached_tokens)
            if rec.scheduled is not None:
                self.queue.labels(m).observe(rec.scheduled - rec.arrival)
                if rec.first_token is not None:
                    self.prefill.labels(m).observe(rec.first_token - rec.scheduled)
                    if rec.finish is not None:
                        self.decode.labels(m).observe(rec.finish - rec.first_token)
                if rec.finish is not None:
                    self.inference.labels(m).observe(rec.finish - rec.scheduled)
        for step in steps:
            self.iteration_tokens.labels(m).observe(step.num_tokens)

    def _prefix_tiers(self, workers: list[WorkerStatus]) -> None:
        """Workers report running totals: the counters grow by what is new since their last report (a
        restarted worker, a new process id, starts from zero)."""
        m, sizes = self.model, {"memory": 0, "disk": 0}
        for w in workers:
            for tier, stats in w.load.prefix_cache.items():
                # Memory is each worker's own; the disk folder is one, seen by each worker.
                sizes[tier] = sizes[tier] + stats["bytes"] if tier == "memory" else max(sizes[tier], stats["bytes"])
                for count, metric in (("hits", self.tier_lookups.labels(m, tier, "hit")),
                                      ("misses", self.tier_lookups.labels(m, tier, "miss")),
                                      ("evictions", self.tier_evictions.labels(m, tier)),
                                      ("rejected", self.tier_rejected.labels(m))):
                    if count not in stats:
                        continue
                    key = (w.name, w.pid, tier, count)
                    metric.inc(max(0, stats[count] - self._tier_seen.get(key, 0)))
                    self._tier_seen[key] = stats[count]
        for tier, size in sizes.items():
            self.tier_bytes.labels(m, tier).set(size)

    def render(self) -> bytes:
        return generate_latest(self.registry)
