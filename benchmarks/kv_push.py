"""How much of a long prompt's KV transfer is left after its prefill: shm's push against its pull.

One prefill and one decode worker (one core each), no other load. Each round sends a fresh prompt
of --tokens tokens (random ids, so no cache helps) with the push on (each layer's KV copied into
blocks the decode worker reserved, inside the prefill) and then off (the KV gathered into a segment
after the prefill and loaded by the decode worker), and reads the router's transfer record.
Prints a table and writes results/kv_push.json (and .md).
  python benchmarks/kv_push.py [--tokens 4000] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.reference_tools import cpu_model  # noqa: E402
from engine.cluster.cluster import Cluster  # noqa: E402
from engine.cluster.topology import Topology  # noqa: E402
from engine.cluster.transports import TransportSettings  # noqa: E402
from engine.core.config import EngineConfig, SamplingParams  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results"


def one_prompt(push: bool, tokens: int, rng: random.Random) -> dict:
    settings = TransportSettings("shm", push=push)
    with Cluster(Topology("disaggregated"), EngineConfig(kv_cache_tokens=tokens + 512), transport=settings) as cluster:
        stream = cluster.submit([rng.randrange(1000, 40000) for _ in range(tokens)],
                                SamplingParams(max_tokens=2, ignore_eos=True))
        stream.result(timeout=600)
        deadline = time.time() + 10
        while not cluster.finished_transfers() and time.time() < deadline:
            time.sleep(0.05)
        t = cluster.finished_transfers()[0]
    return {"push": push, "ttft_s": stream.token_times[0] - stream.sent, "mb": t.nbytes / 1e6, "copies": t.copies,
            "writing_inside_prefill_ms": 1000 * t.writing_seconds, "send_ms": 1000 * t.send_seconds,
            "receive_ms": 1000 * t.receive_seconds, "after_prefill_ms": 1000 * t.total_seconds,
            "exposed_share": t.total_seconds / t.moving_seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tokens", type=int, default=4000)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    rng = random.Random(0)
    rows = []
    for round_ in range(a.rounds):   # alternating, so that the machine's drift hits both alike
        for push in (True, False):
            rows.append({"round": round_ + 1, **one_prompt(push, a.tokens, rng)})
            print(rows[-1], flush=True)
    medians = {}
    for push in (True, False):
        mine = [r for r in rows if r["push"] == push]
        medians["push" if push else "pull"] = {k: round(statistics.median(r[k] for r in mine), 4)
                                               for k in mine[0] if k not in ("round", "push", "copies")}
    machine = f"{cpu_model()}, {os.cpu_count()} cores, {platform.platform()}"
    lines = [f"# shm: push against pull, one {a.tokens}-token prompt per round, 1P1D, no other load", "",
             f"Machine: {machine}. Medians of {a.rounds} alternating rounds.", "",
             "| route | copies | writing inside the prefill (ms) | after the prefill (ms) | exposed share "
             "| long prompt TTFT (s) |", "|---|---|---|---|---|---|"]
    for name, m in medians.items():
        copies = next(r["copies"] for r in rows if r["push"] == (name == "push"))
        lines.append(f"| {name} | {copies} | {m['writing_inside_prefill_ms']:.1f} | {m['after_prefill_ms']:.1f} "
                     f"| {100 * m['exposed_share']:.1f}% | {m['ttft_s']:.2f} |")
    lines += ["", "Exposed share: of the time the KV's bytes took to move, the part after the prefill ended "
              "(the pull's is all of it: send, then the decode worker's load)."]
    print("\n".join(lines))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "kv_push.json").write_text(json.dumps({"machine": machine, "tokens": a.tokens, "rows": rows,
                                                      "medians": medians}, indent=1))
    (RESULTS / "kv_push.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
