"""Does the planner's cost model predict this machine? The same formulas, fed this machine's measured
limits (peak FLOP/s, memory bandwidth, the efficiency of matrix multiplies and of attention against
tokens, all from micro-benchmarks that do not run the engine) and three fixed costs per layer (per
step, per token, per decoding sequence), against the engine's measured step times. The fixed costs
are fitted leave-one-out: each step is predicted from a fit to the other steps, never to itself.
Prints a table and writes results/planner_calibration.json (target: every step within 25%).
  python benchmarks/planner_calibration.py
"""
from __future__ import annotations

import dataclasses
import json
import platform
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402

from engine.core.config import EngineConfig, SamplingParams  # noqa: E402
from engine.core.llm_engine import LLMEngine  # noqa: E402
from lab.lesson_experiments import machine_limits  # noqa: E402
from lab.planner import cost_model as cm  # noqa: E402
from lab.planner.calibration import StepSample, fit_fixed_costs, leave_one_out  # noqa: E402
from lab.planner.machine_profile import attention_curve, gemm_curve, measured_device, model_spec  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results"
TARGET = 0.25
DECODE_PROMPT, DECODE_STEPS = 60, 16
ROUNDS = 3


def _tokens(n: int, rng: random.Random) -> list[int]:
    return [rng.randrange(1000, 40000) for _ in range(n)]


def _run(engine: LLMEngine) -> None:
    while engine.has_work:
        engine.step()


def measured_prefill(engine: LLMEngine, n: int, rng: random.Random) -> float:
    times = []
    for _ in range(3):
        before = len(engine.steps)
        engine.add_request(_tokens(n, rng), SamplingParams(max_tokens=1))
        _run(engine)
        times += [s.duration for s in engine.steps[before:] if s.kind == "prefill"]
    return statistics.median(times)


def measured_decode(engine: LLMEngine, batch: int, rng: random.Random) -> float:
    before = len(engine.steps)
    for _ in range(batch):
        engine.add_request(_tokens(DECODE_PROMPT, rng), SamplingParams(max_tokens=DECODE_STEPS, ignore_eos=True))
    _run(engine)
    return statistics.median(s.duration for s in engine.steps[before:] if s.kind == "decode" and s.batch_size == batch)


def measured_mixed(engine: LLMEngine, batch: int, prompt: int, rng: random.Random) -> float:
    """Median mixed step of a chunked engine: `batch` decodes beside chunks of one `prompt`-token prompt."""
    before = len(engine.steps)
    for _ in range(batch):
        engine.add_request(_tokens(DECODE_PROMPT, rng), SamplingParams(max_tokens=40, ignore_eos=True))
    engine.step()
    engine.add_request(_tokens(prompt, rng), SamplingParams(max_tokens=1))
    _run(engine)
    mixed = [s.duration for s in engine.steps[before:] if s.kind == "mixed" and s.batch_size == batch + 1]
    return statistics.median(mixed)


def main() -> None:
    rng = random.Random(0)
    engine = LLMEngine(EngineConfig(kv_cache_tokens=8192))
    chunked = LLMEngine(EngineConfig(kv_cache_tokens=8192, policy="chunked", chunk_size=256), loaded=engine.loaded)
    model = engine.loaded.model
    spec = model_spec(model, "SmolLM2-135M-Instruct")
    limits = machine_limits(1.0)
    mixed_context = 8 * (DECODE_PROMPT + 10)

    # (step, size, tokens, decoding sequences, measure() -> seconds, predict(device) -> seconds)
    rows = [("decode", f"batch {b}", b, b, lambda b=b: measured_decode(engine, b, rng),
             lambda d, b=b: cm.decode_seconds(spec, d, b, b * (DECODE_PROMPT + DECODE_STEPS // 2)))
            for b in (1, 2, 4, 8, 16)]
    rows += [("prefill", f"{n} tokens", n, 0, lambda n=n: measured_prefill(engine, n, rng),
              lambda d, n=n: cm.prefill_seconds(spec, d, [n])) for n in (128, 512, 1024, 2048)]
    rows.append(("mixed", "8 decodes + 248 prompt tokens", 256, 8, lambda: measured_mixed(chunked, 8, 1024, rng),
                 lambda d: cm.mixed_seconds(spec, d, 248, 512, 8, mixed_context)))

    # Rounds spread each measurement over time; every point is its median over the rounds.
    gemm, attention, samples = [], [], [[] for _ in rows]
    for _ in range(ROUNDS):
        gemm.append(gemm_curve(model))
        attention.append(attention_curve(model))
        for i, row in enumerate(rows):
            samples[i].append(row[4]())
    device = measured_device(limits["peak_gflops"] * 1e9, limits["bandwidth_gbs"] * 1e9,
                             psutil.virtual_memory().total, gemm, attention)
    steps = [StepSample(tokens, decodes, statistics.median(s), predict(device))
             for (_, _, tokens, decodes, _, predict), s in zip(rows, samples)]

    # The fixed costs the roofline does not see: fitted on all steps (reported), and for each step on
    # the other steps only (its prediction).
    costs = fit_fixed_costs(steps, spec.layers)
    table = []
    for (step, size, _, _, _, predict), sample, rounds, held_out in zip(rows, steps, samples,
                                                                          leave_one_out(steps, spec.layers)):
        predicted = predict(held_out.on(device))
        table.append({"step": step, "size": size, "predicted_ms": round(1000 * predicted, 1),
                      "measured_ms": round(1000 * sample.measured, 1),
                      "error_pct": round(100 * (predicted - sample.measured) / sample.measured, 1),
                      "rounds_ms": [round(1000 * r, 1) for r in rounds]})
    out = {"machine": f"{platform.platform()}, {platform.processor() or platform.machine()}, "
                      f"{psutil.cpu_count()} CPUs",
           "model": dataclasses.asdict(spec),
           "peak_gflops": round(device.flops / 1e9, 1), "bandwidth_gbs": round(device.bandwidth / 1e9, 1),
           "layer_overhead_us": round(1e6 * costs.per_step, 1), "token_overhead_us": round(1e6 * costs.per_token, 2),
           "sequence_overhead_us": round(1e6 * costs.per_sequence, 2),
           "gemm_efficiency": [{"tokens": n, "share_of_peak": round(e, 3)} for n, e in device.gemm_efficiency],
           "attention_efficiency": [{"tokens": n, "share_of_peak": round(e, 3)}
                                    for n, e in device.attention_efficiency],
           "target_pct": 100 * TARGET,
           "within_target": all(abs(r["error_pct"]) <= 100 * TARGET for r in table),
           "rows": table}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "planner_calibration.json").write_text(json.dumps(out, indent=2))
    print(f"measured limits: {out['peak_gflops']} GFLOP/s peak, {out['bandwidth_gbs']} GB/s; "
          f"fitted per layer: {out['layer_overhead_us']} us per step, {out['token_overhead_us']} us per token, "
          f"{out['sequence_overhead_us']} us per decoding sequence")
    print("matrix-multiply efficiency: " + ", ".join(f"{n}: {e:.2f}" for n, e in device.gemm_efficiency))
    print("attention efficiency: " + ", ".join(f"{n}: {e:.2f}" for n, e in device.attention_efficiency))
    print(f"{'step':<9}{'size':<32}{'predicted ms':>13}{'measured ms':>13}{'error':>8}")
    for r in table:
        print(f"{r['step']:<9}{r['size']:<32}{r['predicted_ms']:>13}{r['measured_ms']:>13}{r['error_pct']:>7}%")
    print(f"every prediction within {out['target_pct']:.0f}%: {out['within_target']}")


if __name__ == "__main__":
    main()
