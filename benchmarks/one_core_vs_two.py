"""How much faster the decode step runs on two cores than on one: the floor under the disaggregated
decode worker's ITL (one core of two) against the colocated engine's (both cores).

Each configuration runs in a fresh process pinned to its cores: the memory read speed (a sum over as many
bytes as the model's fp32 weights, which every decode step reads), then the engine's decode step at
batch 1 and 6, eager and compiled (--compile-decode), same prompts. Not a test: numbers are noisy.
    python benchmarks/one_core_vs_two.py [--dtype float32] [--rounds 3]
Prints a table and writes results/one_core_vs_two.json and .md.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.reference_tools import cpu_capability, cpu_model  # noqa: E402

RESULTS = ROOT / "results"
WEIGHT_BYTES = 538_000_000   # SmolLM2-135M's linear and output-layer weights in fp32


def measure(cores: tuple[int, ...], dtype: str, rounds: int) -> dict:
    import torch

    from engine.core.config import EngineConfig, SamplingParams
    from engine.core.llm_engine import LLMEngine

    os.sched_setaffinity(0, set(cores))
    torch.set_num_threads(len(cores))
    data = torch.ones(WEIGHT_BYTES // 4)
    reads = []
    for _ in range(7):
        start = time.perf_counter()
        data.sum()
        reads.append(time.perf_counter() - start)
    del data
    out = {"cores": list(cores), "read_gb_s": round(WEIGHT_BYTES / statistics.median(reads) / 1e9, 1)}
    for compiled in (False, True):
        engine = LLMEngine(EngineConfig(dtype=dtype, compile_decode=compiled, kv_cache_tokens=8192))
        rng = random.Random(0)
        for batch in (1, 6):
            steps = []
            for _ in range(rounds):
                for _ in range(batch):
                    engine.add_request([rng.randrange(1000, 40000) for _ in range(150)],
                                       SamplingParams(max_tokens=24, ignore_eos=True))
                engine.step()   # the prefill
                while engine.has_work:
                    start = time.perf_counter()
                    engine.step()
                    steps.append(time.perf_counter() - start)
            out[f"{'compiled' if compiled else 'eager'}_batch{batch}_ms"] = round(1000 * statistics.median(steps), 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--rounds", type=int, default=3, help="batches of 24 tokens measured per figure")
    args = ap.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        sys.exit(f"this benchmark needs two CPU cores; this process may use {cores}")
    rows = []
    for mine in ((cores[1],), (cores[0], cores[1])):   # the decode worker's core, then both
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            rows.append(pool.submit(measure, mine, args.dtype, args.rounds).result())
        print(rows[-1], flush=True)
    one, two = rows
    ratios = {key: round(one[key] / two[key], 2) for key in one if key.endswith("_ms")}
    ratios["read_gb_s"] = round(two["read_gb_s"] / one["read_gb_s"], 2)
    result = {"machine": {"platform": platform.platform(), "cpu": f"{cpu_model()} ({cpu_capability()})",
                          "cpus": len(cores)}, "dtype": args.dtype, "one_core": one, "two_cores": two,
              "one_over_two": ratios}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "one_core_vs_two.json").write_text(json.dumps(result, indent=2))
    keys = ["read_gb_s"] + [k for k in one if k.endswith("_ms")]
    lines = [f"# One core against two ({args.dtype})", "",
             f"Machine: {result['machine']['cpu']}, {len(cores)} CPUs, {result['machine']['platform']}. "
             f"Decode steps: medians over {args.rounds} batches of 24 tokens, 150-token prompts.", "",
             "| figure | one core | two cores | one / two (read speed: two / one) |", "|---|---|---|---|"]
    lines += [f"| {k} | {one[k]} | {two[k]} | {ratios[k]} |" for k in keys]
    (RESULTS / "one_core_vs_two.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
