"""The guided pages' experiments: each runs on the real engine and returns plain data to plot.

They use the lab's shared engine loop (an in-process engine on its own thread), or start their
own worker processes where a page compares serving modes.
"""
from __future__ import annotations

import random
import statistics
import tempfile
import time

import torch

from engine.cluster.cluster import Cluster
from engine.cluster.topology import Mode, Topology
from engine.cluster.transports import working_transports
from engine.core.config import EngineConfig, SamplingParams
from engine.core.engine_loop import EngineLoop
from engine.core.llm_engine import LLMEngine
from engine.core.sequence import StepKind
from engine.metrics import summarize

from .engine_trace import timeline_bars, ttft_split
from .interference import Workload, relative_injections, run_interference, summarize_run, token_table
from .load_generator import RequestKind
from .machine_load import CpuWatch
from .prompts import chat_question

MEASURED_PROMPT_TOKENS = 1500   # page 6 moves this prompt's KV over each transport
INJECT_AFTER_TOKENS = 8   # every chat user has streamed this many tokens before the long prompt arrives
SYSTEM_PROMPT = ("You are the assistant of an online course on LLM serving. Answer briefly, in plain words, "
                 "and say when you are not sure. ") * 6


def _tokens(n: int, rng: random.Random) -> list[int]:
    return [rng.randrange(1000, 40000) for _ in range(n)]


def machine_limits(seconds: float = 0.5) -> dict:
    """This machine's measured peak: fp32 matmul GFLOP/s and memory copy GB/s."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        runs += 1
    gflops = 2 * 1024 ** 3 * runs / (time.perf_counter() - start) / 1e9
    src = torch.empty(64 * 2 ** 20)  # 256 MB, far beyond any cache
    dst = torch.empty_like(src)
    dst.copy_(src)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        dst.copy_(src)
        runs += 1
    gbs = 2 * src.nbytes * runs / (time.perf_counter() - start) / 1e9  # read + write
    return {"peak_gflops": gflops, "bandwidth_gbs": gbs}


def measure_stages(loop: EngineLoop, prompt_lengths=(128, 512, 1024, 2048), batches=(1, 2, 4, 8, 16)) -> dict:
    """Prefill time vs prompt length and decode step time vs batch size, from the engine's own step
    records, with the arithmetic intensity of each (the roofline lesson)."""
    engine, rng = loop.engine, random.Random(0)
    params = engine.loaded.matmul_params
    bytes_per_param = engine.loaded.model.dtype.itemsize
    prefill = []
    for n in prompt_lengths:
        before = len(engine.steps)
        loop.submit(_tokens(n, rng), SamplingParams(max_tokens=1)).result(timeout=300)
        step = next(s for s in engine.steps[before:] if s.kind == StepKind.PREFILL and s.num_tokens == n)
        prefill.append({"tokens": n, "seconds": step.duration, "tok_s": n / step.duration,
                        "intensity": 2 * params * n / (params * bytes_per_param),
                        "gflops": 2 * params * n / step.duration / 1e9})
    decode = []
    for b in batches:
        before = len(engine.steps)
        streams = [loop.submit(_tokens(40, rng), SamplingParams(max_tokens=12, ignore_eos=True)) for _ in range(b)]
        for s in streams:
            s.result(timeout=300)
        steps = [s.duration for s in engine.steps[before:] if s.kind == StepKind.DECODE and s.batch_size == b]
        step = statistics.median(steps) if steps else float("nan")
        decode.append({"batch": b, "step_ms": 1000 * step,
                       "intensity": 2 * params * b / (params * bytes_per_param),
                       "gflops": 2 * params * b / step / 1e9})
    return {"prefill": prefill, "decode": decode, "params": params, **machine_limits()}


def measure_metrics(loop: EngineLoop, users: int = 4, output_tokens: int = 32) -> dict:
    rng = random.Random(1)
    streams = [loop.submit(chat_question(rng), SamplingParams(max_tokens=output_tokens, ignore_eos=True))
               for _ in range(users)]
    for s in streams:
        s.result(timeout=300)
    summary = summarize([s.timing for s in streams])
    return {"ttft_s": [s.timing.ttft for s in streams], "itl_ms": [1000 * g for s in streams for g in s.timing.itls],
            "ttft_p50_s": summary.ttft["p50"], "itl_p50_ms": 1000 * summary.itl["p50"],
            "itl_p99_ms": 1000 * summary.itl["p99"], "tpot_ms": 1000 * summary.tpot["p50"]}


def chat_timeline(loop: EngineLoop, question: str) -> dict:
    """One chat request: system prompt + question -> prefill -> KV cache -> decode, with real times."""
    engine = loop.engine
    ids = engine.encode([{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}])
    before = len(engine.steps)
    stream = loop.submit(ids, SamplingParams(max_tokens=40))
    stream.result(timeout=300)
    record = next(r for r in reversed(engine.finished) if r.request_id == stream.request_id)
    steps = [s for s in engine.steps[before:] if s.start >= record.arrival]
    return {"prompt_tokens": len(ids), "output_tokens": len(stream.token_times), "text": stream.text,
            "sent": stream.sent, "scheduled": record.scheduled, "first_token": stream.token_times[0],
            "token_times": stream.token_times,
            "prefill_s": next((s.duration for s in steps if s.kind == StepKind.PREFILL), 0),
            "kv_bytes_per_token": engine.cache.bytes_per_token,
            "kv_bytes": engine.cache.bytes_per_token * (len(ids) + len(stream.token_times)),
            "timeline": timeline_bars(steps, [], stream.sent, stream.token_times[-1], {stream.request_id})}


def interference(mode: Mode, users: int = 8, long_tokens: int = 2000, transport: str = "shm") -> dict:
    """The lecture's scenario, small enough for a page: chat users stream, one long prompt arrives.

    Besides the streams' timings it keeps what explains them: each worker's steps and KV transfers
    (the engine timeline), the long prompt's TTFT split, each worker's cores, and how busy the rest
    of the machine was."""
    topology = Topology(mode)
    # Users barely pause, so streams are mid-answer when the long prompt lands; it lands once every
    # user has streamed a few tokens, however slow the machine.
    workload = Workload(users=users, short_output_tokens=32, long_prompt_tokens=long_tokens, inject_at=(2.0,),
                        inject_after_tokens=INJECT_AFTER_TOKENS, tail_s=3.0, think_s=0.1, time_limit_s=120.0)
    with Cluster(topology, EngineConfig(kv_cache_tokens=8192), transport=transport,
                 conditional_threshold=1000 if topology.mode == Mode.DISAGGREGATED else None) as cluster:
        watch = CpuWatch([w.pid for w in cluster.status()])
        result = run_interference(cluster, workload, topology.label)
        machine = watch.stop()
        ended = time.perf_counter()
    steps, transfers = list(cluster.steps), dict(cluster.transfers)   # complete once the cluster has stopped
    workers = [{"name": spec.name, "role": str(spec.role), "device": spec.engine.device,
               "cores": list(spec.engine.cpu_cores or ())} for spec in cluster.specs]
    longs = [r.stream for r in result.requests if r.kind == RequestKind.LONG]
    splits = [ttft_split(s.request_id, s.sent, s.token_times[0] if s.token_times else None, steps,
                         transfers.get(s.request_id)) for s in longs]
    return {"summary": summarize_run(result), "tokens": token_table(result).to_dict("list"),
            "injections": relative_injections(result), "workers": workers,
            "users": users, "long_tokens": long_tokens, "inject_after_tokens": workload.inject_after_tokens,
            "ttft_split": [s for s in splits if s],
            "timeline": timeline_bars(steps, transfers.values(), result.started, ended,
                                      {s.request_id for s in longs}),
            "machine": {"cores": machine.cores, "other_cores": round(machine.other_cores, 2),
                        "busy": machine.busy}}


def measure_transports(prompt_tokens: int = MEASURED_PROMPT_TOKENS, transports=None) -> list[dict]:
    """One prompt's KV moved prefill -> decode over each transport that works on this machine."""
    rows = []
    for name in transports or working_transports():
        with Cluster(Topology(Mode.DISAGGREGATED), EngineConfig(kv_cache_tokens=4096), transport=name) as cluster:
            ids = _tokens(prompt_tokens, random.Random(2))
            cluster.submit(ids, SamplingParams(max_tokens=2, ignore_eos=True)).result(timeout=300)
            deadline = time.time() + 10
            while not cluster.finished_transfers() and time.time() < deadline:
                time.sleep(0.05)
            t = cluster.finished_transfers()[0]
            # A push whose writes the engine does not time (NIXL's run on their own during the prefill) was
            # seen only for what followed the prefill: its writing time, moving time and GB/s are unknown
            # (NaN, shown "-"), not that remainder, so that no rate is read off the remainder.
            untimed = t.during_prefill and t.writing_seconds <= 0
            unknown = float("nan")
            rows.append({"transport": name, "bytes": t.nbytes, "copies": t.copies, "during_prefill": t.during_prefill,
                         "writing_ms": unknown if untimed else 1000 * t.writing_seconds,
                         "send_ms": 1000 * t.send_seconds, "total_ms": 1000 * t.total_seconds,
                         "moving_ms": unknown if untimed else 1000 * t.moving_seconds,
                         "gbps": unknown if untimed else t.gbps})
    return rows


def prefix_cache_tiers(loop: EngineLoop, ttl_s: float = 4.0) -> list[dict]:
    """TTFT of four requests with one long system prompt, each answered from a different place: cold
    (recomputed), warm (this worker's memory tier), on another worker (which reads the first one's
    blocks from the disk folder they share), and on the first worker again after its memory entry
    expired (the disk still has it). Two engines on the loop's loaded model stand for two workers."""
    with tempfile.TemporaryDirectory(prefix="pdlab-kv-store-") as folder:
        def worker(name: str) -> LLMEngine:
            config = EngineConfig(kv_cache_tokens=4096, prefix_cache_tokens=4096, prefix_cache_ttl_s=ttl_s,
                                  kv_store_folder=folder)
            return LLMEngine(config, loaded=loop.engine.loaded, name=name)
        first, other = worker("worker-0"), worker("worker-1")
        rows = []
        for label, engine, question, wait in (("cold", first, "What is prefill?", 0.0),
                                              ("warm", first, "What is decode?", 0.0),
                                              ("other_worker", other, "What is a KV cache?", 0.0),
                                              ("expired", first, "What is TTFT?", ttl_s + 1.0)):
            time.sleep(wait)
            ids = engine.encode([{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}])
            engine.add_request(ids, SamplingParams(max_tokens=1))
            while engine.has_work:
                engine.step()
            first.disk_tier.flush()   # the blocks are on disk before the next request looks
            record = engine.finished[-1]
            rows.append({"request": label, "prompt_tokens": len(ids), "cached_tokens": record.cached_tokens,
                         "tier": record.cache_tier or "recompute",
                         "ttft_ms": 1000 * (record.first_token - record.arrival)})
        for engine in (first, other):
            engine.disk_tier.close()
    return rows
