"""Where a long shared prefix's KV comes from, and what it costs: recompute, host memory, disk, another worker.

A colocated cluster of two workers (one core each) with the prefix cache in memory and the disk tier
in a fresh folder. Each round takes a new random 4000-token prefix and one question after it, and
sends the same prompt four times:
  recompute     the first time: nothing cached, the whole prompt is prefilled
  host          again, on the same worker: its memory tier has the prefix
  other_worker  again, while that worker is busy, so the router sends it to the other worker, whose
                memory does not have it: read from the shared disk folder
  disk          after the cluster is stopped and a fresh one started on the same folder (read from
                the disk tier; the files are likely in the OS page cache, which this does not empty)
TTFT is measured by the client; every answer must equal the first, token for token (greedy).
Then the store's cost when nothing hits: a stream of distinct prompts with the store off and on, in
alternating rounds: ITL p50 and TTFT p50, on over off. Last, whether cache-aware routing helps: the
same requests sharing a few system prompts, routed to the least loaded worker or to the one that
last got the prompt's first block.
Prints a table and writes results/kv_tiers.json (and .md).
  python benchmarks/kv_tiers.py [--tokens 4000] [--rounds 2]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.reference_tools import cpu_model  # noqa: E402
from engine.cluster.cluster import Cluster  # noqa: E402
from engine.cluster.topology import Topology  # noqa: E402
from engine.core.config import EngineConfig, SamplingParams  # noqa: E402
from engine.metrics import Timing, summarize  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results"
ANSWER = SamplingParams(max_tokens=8, ignore_eos=True)
TIERS = ("recompute", "host", "other_worker", "disk")


def config(tokens: int, folder: str | None) -> EngineConfig:
    store = dict(prefix_cache_tokens=2 * tokens, kv_store_folder=folder) if folder else {}
    return EngineConfig(kv_cache_tokens=2 * tokens + 1024, **store)


def ask(cluster: Cluster, prompt: list[int]) -> tuple[float, list[int], str, int]:
    stream = cluster.submit(prompt, ANSWER)
    stream.result(timeout=900)
    record = next(r for r in reversed(list(cluster.requests)) if r.request_id == stream.request_id)
    return stream.token_times[0] - stream.sent, stream.token_ids, record.cache_tier, record.cached_tokens


def one_round(tokens: int, rng: random.Random) -> dict:
    prompt = [rng.randrange(1000, 40000) for _ in range(tokens)] + [rng.randrange(1000, 40000) for _ in range(24)]
    folder = tempfile.mkdtemp(prefix="pdlab-kv-tiers-")
    out = {}
    with Cluster(Topology("colocated", workers=2), config(tokens, folder)) as cluster:
        out["recompute"] = ask(cluster, prompt)
        time.sleep(2.0)   # the disk tier's writer thread puts the blocks on disk
        out["host"] = ask(cluster, prompt)
        busy = cluster.submit([rng.randrange(1000, 40000) for _ in range(16)],
                              SamplingParams(max_tokens=2000, ignore_eos=True))   # holds worker-0
        while not busy.token_ids:
            time.sleep(0.05)
        out["other_worker"] = ask(cluster, prompt)
        busy.cancel()
        busy.wait(60)
    with Cluster(Topology("colocated", workers=2), config(tokens, folder)) as cluster:
        out["disk"] = ask(cluster, prompt)
    for f in Path(folder).iterdir():
        f.unlink()
    os.rmdir(folder)
    answers = {tier: out[tier][1] for tier in TIERS}
    return {"ttft_s": {tier: round(out[tier][0], 4) for tier in TIERS},
            "served_from": {tier: out[tier][2] or "recompute" for tier in TIERS},
            "cached_tokens": {tier: out[tier][3] for tier in TIERS},
            "same_answer": all(a == answers["recompute"] for a in answers.values())}


def stream_of_prompts(folder: str | None, rng: random.Random, requests: int = 10) -> dict:
    """Distinct 200-token prompts, one a second, 24 tokens each, on one worker with both cores: nothing
    for the store to hit, so all it does is copy each prompt's blocks and write them to disk."""
    with Cluster(Topology("colocated"), config(200, folder)) as cluster:
        streams = []
        for _ in range(requests):
            streams.append(cluster.submit([rng.randrange(1000, 40000) for _ in range(200)],
                                          SamplingParams(max_tokens=24, ignore_eos=True)))
            time.sleep(1.0)
        for s in streams:
            s.result(timeout=600)
    summary = summarize([Timing(s.sent, s.token_times) for s in streams])
    return {"itl_p50": summary.itl["p50"], "ttft_p50": summary.ttft["p50"]}


def routed(cache_aware: bool, rng: random.Random, systems: int = 3, questions: int = 4, tokens: int = 1000) -> dict:
    """Two colocated workers with the memory tier only: `systems` long system prompts, each followed by
    `questions` different questions, interleaved, one request every 1.5 s. How much of the prompts came
    from the cache, and the TTFT, with the least loaded worker or the cache-aware choice."""
    prefixes = [[rng.randrange(1000, 40000) for _ in range(tokens)] for _ in range(systems)]
    config = EngineConfig(kv_cache_tokens=8192, prefix_cache_tokens=8192)
    with Cluster(Topology("colocated", workers=2), config, cache_aware=cache_aware) as cluster:
        streams = []
        for _ in range(questions):
            for prefix in prefixes:
                streams.append(cluster.submit(prefix + [rng.randrange(1000, 40000) for _ in range(20)],
                                              SamplingParams(max_tokens=16, ignore_eos=True)))
                time.sleep(1.5)
        for s in streams:
            s.result(timeout=600)
        records = [r for r in cluster.requests if r.request_id in {s.request_id for s in streams}]
    summary = summarize([Timing(s.sent, s.token_times) for s in streams])
    return {"cache_aware": cache_aware, "cached_share": sum(r.cached_tokens for r in records) /
            sum(r.prompt_tokens for r in records), "ttft_p50": summary.ttft["p50"], "ttft_mean": summary.ttft["mean"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tokens", type=int, default=4000)
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args()
    rng = random.Random(0)
    rounds = []
    for i in range(a.rounds):
        rounds.append(one_round(a.tokens, rng))
        print(f"round {i + 1}: {rounds[-1]}", flush=True)
    ttft = {tier: round(statistics.median(r["ttft_s"][tier] for r in rounds), 4) for tier in TIERS}
    costs = []
    for i in range(a.rounds):   # alternating, so that the machine's drift hits both alike
        with tempfile.TemporaryDirectory(prefix="pdlab-kv-tiers-") as folder:
            off, on = stream_of_prompts(None, rng), stream_of_prompts(folder, rng)
        costs.append({"off": off, "on": on})
        print(f"store off/on {i + 1}: {costs[-1]}", flush=True)
    ratio = {k: round(statistics.median(c["on"][k] / c["off"][k] for c in costs), 3) for k in ("itl_p50", "ttft_p50")}
    routing = []
    for i in range(a.rounds):
        for cache_aware in (False, True):
            routing.append(routed(cache_aware, rng))
            print(f"routing {i + 1}: {routing[-1]}", flush=True)
    by_policy = {name: {k: round(statistics.median(r[k] for r in routing if r["cache_aware"] == aware), 4)
                        for k in ("cached_share", "ttft_p50", "ttft_mean")}
                 for name, aware in (("least_loaded", False), ("cache_aware", True))}
    machine = f"{cpu_model()}, {os.cpu_count()} cores, {platform.platform()}"
    same = all(r["same_answer"] for r in rounds)
    lines = [f"# Where a {a.tokens}-token shared prefix's KV comes from", "",
             f"Machine: {machine}. Two colocated workers, one core each; medians of {a.rounds} rounds, "
             f"each a new random prefix.", "",
             "| served from | TTFT (s) | against recompute | cached tokens (round 1) |", "|---|---|---|---|"]
    for tier in TIERS:
        lines.append(f"| {tier} | {ttft[tier]:.3f} | {ttft[tier] / ttft['recompute']:.3f}x "
                     f"| {rounds[0]['cached_tokens'][tier]} |")
    lines += ["", f"Every answer equal to the recomputed one, token for token: {'yes' if same else 'NO'}.",
              "The disk row reads files the OS has likely cached in memory (a cold SSD read is slower).", "",
              "With the store on and nothing to hit (10 distinct 200-token prompts, one a second), on over off: "
              f"ITL p50 {ratio['itl_p50']:.3f}x, TTFT p50 {ratio['ttft_p50']:.3f}x.", "",
              "Routing, two workers with the memory tier only: 3 system prompts of 1000 tokens, 4 questions each, "
              "interleaved, one request every 1.5 s:", "",
              "| router | prompt tokens from the cache | TTFT p50 (s) | TTFT mean (s) |", "|---|---|---|---|"]
    for name, m in by_policy.items():
        lines.append(f"| {name.replace('_', ' ')} | {100 * m['cached_share']:.0f}% | {m['ttft_p50']:.3f} "
                     f"| {m['ttft_mean']:.3f} |")
    print("\n".join(lines))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "kv_tiers.json").write_text(json.dumps(
        {"machine": machine, "tokens": a.tokens, "ttft_s": ttft, "same_answer": same, "rounds": rounds,
         "store_on_vs_off": ratio, "store_rounds": costs, "routing": by_policy, "routing_rounds": routing}, indent=1))
    (RESULTS / "kv_tiers.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
