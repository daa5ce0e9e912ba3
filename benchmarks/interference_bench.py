"""The seed experiment in every mode, and the KV transfer by transport.

6 short chat streams, one ~4000-token prompt injected; each mode runs in its own worker processes.
Prints a table and writes results/interference.json (and .md), plus each run's token tables.
  python benchmarks/interference_bench.py [--users 6] [--long-prompt-tokens 4000]
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.cluster.cluster import Cluster  # noqa: E402
from engine.core.config import EngineConfig  # noqa: E402
from engine.cluster.topology import Topology  # noqa: E402
from lab.interference import Workload, run_interference, save_result, summarize_run  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results"
RUNS = [  # (label, mode, transport, conditional threshold)
    ("colocated", "colocated", "shm", None),
    ("chunked (256)", "chunked", "shm", None),
    ("disaggregated 1P1D shm", "disaggregated", "shm", 1000),
    ("disaggregated 1P1D shm, every prompt to P", "disaggregated", "shm", 0),
    ("disaggregated 1P1D disk", "disaggregated", "disk", 1000),
    ("disaggregated 1P1D tcp", "disaggregated", "tcp", 1000),
    ("disaggregated 1P1D nixl", "disaggregated", "nixl", 1000),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--users", type=int, default=6)
    p.add_argument("--long-prompt-tokens", type=int, default=4000)
    p.add_argument("--only", nargs="*", help="labels to run (default: all)")
    a = p.parse_args()
    workload = Workload(users=a.users, long_prompt_tokens=a.long_prompt_tokens)
    rows = []
    for label, mode, transport, threshold in RUNS:
        if a.only and label not in a.only:
            continue
        with Cluster(Topology(mode), EngineConfig(kv_cache_tokens=16384), transport=transport,
                     conditional_threshold=threshold) as cluster:
            result = run_interference(cluster, workload, label)
        folder = RESULTS / "runs" / label.replace(" ", "_").replace(",", "")
        save_result(result, folder, {"workload": asdict(workload)})
        s = summarize_run(result)
        long_transfer = [t for t in s["transfer"] if t["tokens"] >= a.long_prompt_tokens // 2]
        rows.append({**s, "long_transfer": long_transfer[0] if long_transfer else None})
        print(f"{label}: stall {s['longest_stall_ms']} ms, ITL p99 before/during "
              f"{s['itl_before_ms']['p99']}/{s['itl_during_ms']['p99']} ms, long TTFT {s['long_ttft_s']}", flush=True)
    colocated = next((r for r in rows if r["label"] == "colocated"), None)
    lines = ["| run | ITL p50 before / during (ms) | ITL p99 before / during (ms) | longest stall (ms) | "
             "short TTFT p50 (ms) | long TTFT (s) | long KV transfer | goodput (req/s) |", "|---" * 8 + "|"]
    for r in rows:
        t = r["long_transfer"]
        transfer = (f"{t['bytes'] / 1e6:.0f} MB: send {1000 * t['send_s']:.0f} ms + receive "
                    f"{1000 * t['receive_s']:.0f} ms, total {1000 * t['total_s']:.0f} ms"
                    + (" after the prefill (written layer by layer during it"
                       + (f", copies {1000 * t['writing_s']:.0f} ms" if t["writing_s"] else "") + ")"
                       if t["during_prefill"] else "")
                    ) if t else "-"
        lines.append(f"| {r['label']} | {r['itl_before_ms']['p50']} / {r['itl_during_ms']['p50']} | "
                     f"{r['itl_before_ms']['p99']} / {r['itl_during_ms']['p99']} | {r['longest_stall_ms']} | "
                     f"{r['short_ttft_ms']['p50']} | {r['long_ttft_s'][0] if r['long_ttft_s'] else '-'} | "
                     f"{transfer} | {r['goodput_rps']} |")
    if colocated:
        for r in rows:
            if r["label"].startswith("disaggregated") and r["longest_stall_ms"] > 0:
                ratio = colocated["longest_stall_ms"] / r["longest_stall_ms"]
                lines.append(f"\n{r['label']}: longest stall {ratio:.0f}x "
                             f"shorter than colocated; ITL p99 during / before = "
                             f"{r['itl_during_ms']['p99'] / r['itl_before_ms']['p99']:.2f}")
    machine = f"{platform.platform()}, {platform.processor() or platform.machine()}"
    header = [f"# Interference: {a.users} chat streams + one {a.long_prompt_tokens}-token prompt", "",
              f"Machine: {machine}. SLO for goodput: TTFT <= {workload.slo_ttft_s} s, "
              f"TPOT <= {workload.slo_tpot_s} s.", ""]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "interference.md").write_text("\n".join(header + lines) + "\n")
    (RESULTS / "interference.json").write_text(json.dumps({"machine": machine, "runs": rows}, indent=2))
    print("\n".join(header + lines))


if __name__ == "__main__":
    main()
