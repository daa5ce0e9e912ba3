"""`python -m lab.run_experiment --mode disaggregated`: the interference experiment from the shell."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
import sys

from engine.cluster.cluster import Cluster
from engine.cluster.shutdown import exit_on_signals
from engine.cluster.topology import Mode, Topology
from engine.cluster.transports import TRANSPORTS
from engine.core.config import EngineConfig

from .interference import Workload, run_interference, save_result, summarize_run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.run_experiment", description=__doc__)
    p.add_argument("--mode", default=Mode.COLOCATED, choices=list(Mode))
    p.add_argument("--prefill-workers", type=int, default=1)
    p.add_argument("--decode-workers", type=int, default=1)
    p.add_argument("--transport", default="shm", choices=list(TRANSPORTS))
    p.add_argument("--conditional-threshold", type=int, default=1000,
                   help="prefill prompts shorter than this on the decode worker, as Dynamo does "
                        "(default 1000 tokens; 0 sends every prompt to a prefill worker)")
    p.add_argument("--chunk-size", type=int, default=256)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--users", type=int, default=6)
    p.add_argument("--short-output-tokens", type=int, default=48)
    p.add_argument("--long-prompt-tokens", type=int, default=4000)
    p.add_argument("--inject-at", type=float, nargs="+", default=[15.0], help="seconds after the start")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="folder for tokens.csv, requests.csv, summary.json")
    a = p.parse_args(argv)
    workload = Workload(users=a.users, short_output_tokens=a.short_output_tokens,
                        long_prompt_tokens=a.long_prompt_tokens, inject_at=tuple(a.inject_at), seed=a.seed)
    topology = Topology(a.mode, a.prefill_workers, a.decode_workers)
    engine = EngineConfig(chunk_size=a.chunk_size, dtype=a.dtype, kv_cache_tokens=16384)
    with exit_on_signals(), Cluster(topology, engine, transport=a.transport,
                                    conditional_threshold=a.conditional_threshold) as cluster:
        label = topology.label + (f" ({a.transport})" if topology.mode == Mode.DISAGGREGATED else "")
        result = run_interference(cluster, workload, label)
    summary = summarize_run(result)
    print(json.dumps(summary, indent=2))
    if a.out:
        folder = save_result(result, a.out, {"workload": asdict(workload)})
        print(f"saved to {folder}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
