"""Does the planner's cost model predict this machine? The same formulas, fed this machine's
measured peak FLOP/s and memory bandwidth (efficiency 1), against the engine's measured step times.
Prints a table and writes results/planner_calibration.json (target: within 25%).
  python benchmarks/planner_calibration.py
"""
from __future__ import annotations

import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.config import EngineConfig, SamplingParams  # noqa: E402
from engine.engine import LLMEngine  # noqa: E402
from lab.lesson_experiments import machine_limits  # noqa: E402
from lab.planner import cost_model as cm  # noqa: E402
from lab.planner.hardware import MODELS, Device  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results"


def measured_prefill(engine: LLMEngine, n: int, rng) -> float:
    engine.add_request([rng.randrange(1000, 40000) for _ in range(n)], SamplingParams(max_tokens=1))
    start = time.perf_counter()
    engine.step()
    return time.perf_counter() - start


def measured_decode(engine: LLMEngine, batch: int, rng) -> float:
    for _ in range(batch):
        engine.add_request([rng.randrange(1000, 40000) for _ in range(60)], SamplingParams(max_tokens=12,
                                                                                            ignore_eos=True))
    engine.step()
    times = []
    while engine.has_work:
        start = time.perf_counter()
        engine.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    rng = random.Random(0)
    engine = LLMEngine(EngineConfig(kv_cache_tokens=8192))
    limits = machine_limits(1.0)
    device = Device("this machine", limits["peak_gflops"] * 1e9, limits["bandwidth_gbs"] * 1e9, 24e9)
    model = MODELS["SmolLM2-135M (fp32)"]
    rows = []
    for n in (512, 2048):
        predicted = cm.prefill_seconds(model, device, [n], efficiency=1.0)
        rows.append(("prefill", n, predicted, min(measured_prefill(engine, n, rng) for _ in range(2))))
    for b in (1, 8):
        predicted = cm.decode_seconds(model, device, b, b * 66, efficiency=1.0)
        rows.append(("decode step", b, predicted, measured_decode(engine, b, rng)))
    table = [{"step": kind, "size": size, "predicted_ms": round(1000 * p, 1), "measured_ms": round(1000 * m, 1),
              "error_pct": round(100 * (p - m) / m, 1)} for kind, size, p, m in rows]
    out = {"machine": f"{platform.platform()}, {platform.processor() or platform.machine()}",
           "peak_gflops": round(limits["peak_gflops"], 1), "bandwidth_gbs": round(limits["bandwidth_gbs"], 1),
           "rows": table}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "planner_calibration.json").write_text(json.dumps(out, indent=2))
    print(f"measured limits: {out['peak_gflops']} GFLOP/s, {out['bandwidth_gbs']} GB/s")
    print(f"{'step':<12}{'size':>6}{'predicted ms':>14}{'measured ms':>13}{'error':>8}")
    for r in table:
        print(f"{r['step']:<12}{r['size']:>6}{r['predicted_ms']:>14}{r['measured_ms']:>13}{r['error_pct']:>7}%")


if __name__ == "__main__":
    main()
