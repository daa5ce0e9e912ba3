"""How long a cluster of worker processes takes to start, answer its first request and stop: what
every guided page that runs a cluster (pages 4-6), the dashboard's "Start engine" and the server
wait for. Workers fork from multiprocessing's fork server, which has imported torch, transformers
and the engine once (engine/cluster/worker_pool.py); `spawn`, a fresh interpreter per worker, is
measured beside it for comparison.

Each start method runs in a fresh process (a fork server lives as long as its owner): a 1P1D cluster
started, asked for 2 tokens of a 200-token prompt and stopped, `--rounds` times; the first round
includes starting the fork server. Not a test: numbers are noisy.
    python benchmarks/worker_start.py [--rounds 4]
Prints a table and writes results/worker_start.json and .md.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.reference_tools import cpu_capability, cpu_model  # noqa: E402

RESULTS = ROOT / "results"
PROMPT_TOKENS = 200


def measure(method: str, rounds: int) -> dict:
    from engine.cluster import worker_pool
    from engine.cluster.cluster import Cluster
    from engine.cluster.topology import Mode, Topology
    from engine.core.config import EngineConfig, SamplingParams

    if method != "forkserver":   # the comparison only: the lab always uses the fork server
        worker_pool.WORKERS = multiprocessing.get_context(method)
    rows = []
    for _ in range(rounds):
        start = time.perf_counter()
        cluster = Cluster(Topology(Mode.DISAGGREGATED), EngineConfig(kv_cache_tokens=4096))
        ready = time.perf_counter()
        prompt = list(range(1000, 1000 + PROMPT_TOKENS))
        cluster.submit(prompt, SamplingParams(max_tokens=2, ignore_eos=True)).result(timeout=300)
        answered = time.perf_counter()
        cluster.stop()
        rows.append({"start_s": ready - start, "first_request_s": answered - ready,
                     "stop_s": time.perf_counter() - answered})
    later = rows[1:] or rows
    return {"method": method, "first_start_s": round(rows[0]["start_s"], 2),
            **{f"{key}_median": round(statistics.median(r[key] for r in later), 2) for key in rows[0]},
            "rounds": [{k: round(v, 2) for k, v in r.items()} for r in rows]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4, help="clusters started per method (the first is reported apart)")
    args = ap.parse_args()
    results = []
    for method in ("forkserver", "spawn"):
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            results.append(pool.submit(measure, method, args.rounds).result())
        print(results[-1], flush=True)
    machine = {"platform": platform.platform(), "cpu": f"{cpu_model()} ({cpu_capability()})",
               "cpus": len(os.sched_getaffinity(0))}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "worker_start.json").write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    lines = ["# Starting a 1P1D cluster", "",
             f"Machine: {machine['cpu']}, {machine['cpus']} CPUs, {machine['platform']}. Rounds after the first: "
             f"medians of {max(args.rounds - 1, 1)}; first request: {PROMPT_TOKENS} prompt tokens, 2 generated.", "",
             "| workers start by | first start (s) | later starts (s) | first request (s) | stop (s) |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['first_start_s']} | {r['start_s_median']} | {r['first_request_s_median']} | "
              f"{r['stop_s_median']} |" for r in results]
    (RESULTS / "worker_start.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
