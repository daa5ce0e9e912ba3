"""Engine benchmarks: decode step vs batch, prefill speed vs prompt length, batching gain, ITL.

Prints a table and writes results/engine_bench.json (and .md). Not a test: numbers are noisy.
  python benchmarks/engine_bench.py [--device cpu] [--dtype float32] [--threads 2] [--quick]
On a GPU it also profiles one decode step: how much of the step's wall time the GPU's kernels fill.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import random
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.core.config import EngineConfig, SamplingParams  # noqa: E402
from engine.core.llm_engine import LLMEngine  # noqa: E402
from engine.core.engine_loop import EngineLoop  # noqa: E402
from engine.core.model_loader import bundled_model_folder  # noqa: E402
from engine.metrics import summarize  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results"


def tokens(n: int, rng: random.Random) -> list[int]:
    return [rng.randrange(1000, 40000) for _ in range(n)]


def decode_step_ms(engine: LLMEngine, batch: int, context: int, rng) -> float:
    for _ in range(batch):
        engine.add_request(tokens(context, rng), SamplingParams(max_tokens=12, ignore_eos=True))
    engine.step()  # the prefill
    times = []
    while engine.has_work:
        start = time.perf_counter()
        engine.step()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[1:] or times)


def prefill_tok_s(engine: LLMEngine, length: int, rng) -> float:
    engine.add_request(tokens(length, rng), SamplingParams(max_tokens=1))
    start = time.perf_counter()
    engine.step()
    seconds = time.perf_counter() - start
    while engine.has_work:
        engine.step()
    return length / seconds


def batching_gain(engine: LLMEngine, n: int, prompt: int, output: int, rng) -> dict:
    prompts = [tokens(prompt, rng) for _ in range(n)]
    # Plain transformers, one request at a time: the model as published, with its own attention and cache.
    device = engine.loaded.device
    model = AutoModelForCausalLM.from_pretrained(bundled_model_folder(), dtype=engine.loaded.dtype).to(device).eval()
    start = time.perf_counter()
    with torch.inference_mode():
        for p in prompts:   # generate returns the tokens on the host: the GPU is done when it returns
            model.generate(torch.tensor([p], device=device), max_new_tokens=output, min_new_tokens=output,
                           do_sample=False).tolist()
    sequential = time.perf_counter() - start
    start = time.perf_counter()
    for p in prompts:
        engine.add_request(p, SamplingParams(max_tokens=output, ignore_eos=True))
    while engine.has_work:
        engine.step()
    batched = time.perf_counter() - start
    return {"requests": n, "prompt": prompt, "output": output, "generate_one_by_one_s": round(sequential, 2),
            "engine_batched_s": round(batched, 2), "speedup": round(sequential / batched, 2)}


def gpu_busy(engine: LLMEngine, batch: int, context: int, rng) -> dict:
    """How much of a decode step the GPU's kernels fill: the median wall time of unprofiled steps against
    the kernel time of one profiled step. A small share means the step waits on the host (Python and
    kernel launches), which CUDA graphs remove."""
    from torch.profiler import ProfilerActivity, profile
    for _ in range(batch):
        engine.add_request(tokens(context, rng), SamplingParams(max_tokens=12, ignore_eos=True))
    engine.step()   # the prefill
    walls = []
    for _ in range(8):
        start = time.perf_counter()
        engine.step()
        walls.append(time.perf_counter() - start)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        engine.step()
    while engine.has_work:
        engine.step()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    kernel_s = sum(e.time_range.elapsed_us() for e in kernels) / 1e6
    wall = statistics.median(walls[1:])
    return {"batch": batch, "step_ms": round(1000 * wall, 2), "kernels": len(kernels),
            "kernel_ms": round(1000 * kernel_s, 2), "busy_share": round(kernel_s / wall, 3)}


def streams_itl(config: EngineConfig, streams: int, output: int, seed: int) -> dict:
    """ITL of concurrent streams through the threaded loop, in a fresh process where the loop's thread is
    the only one that runs PyTorch (engine/core/engine_loop.py says why that matters on a small CPU)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_streams_itl, config, streams, output, seed).result()


def _streams_itl(config: EngineConfig, streams: int, output: int, seed: int) -> dict:
    loop = EngineLoop(lambda: LLMEngine(config), name="bench")
    rng = random.Random(seed)
    try:
        handles = [loop.submit(tokens(40, rng), SamplingParams(max_tokens=output, ignore_eos=True))
                   for _ in range(streams)]
        for h in handles:
            h.result(timeout=600)
    finally:
        loop.stop()
    s = summarize([h.timing for h in handles])
    return {"streams": streams, "itl_p50_ms": round(1000 * s.itl["p50"], 1),
            "itl_p99_ms": round(1000 * s.itl["p99"], 1),
            "output_tok_s": round(s.output_throughput, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="fewer sizes, for a smoke run")
    a = p.parse_args()
    rng = random.Random(0)
    config = EngineConfig(device=a.device, dtype=a.dtype, threads=a.threads, kv_cache_tokens=16384,
                          max_prefill_tokens=8192)
    engine = LLMEngine(config)
    on_gpu = engine.loaded.device.type == "cuda"
    batches = [1, 6, 16] if a.quick else [1, 2, 4, 8, 16, 32] + ([64, 128] if on_gpu else [])
    lengths = [128, 1024] if a.quick else [128, 512, 1024, 2048, 4000, 8000]
    out = {
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": torch.get_num_threads(), "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name(engine.loaded.device) if on_gpu else None},
        "model": engine.loaded.name, "dtype": a.dtype, "device": str(engine.loaded.device),
        "decode_step_ms": {b: round(decode_step_ms(engine, b, 60, rng), 1) for b in batches},
        "prefill_tok_s": {n: round(prefill_tok_s(engine, n, rng), 1) for n in lengths if n < 8192},
        "batching": batching_gain(engine, 8, 128, 32 if a.quick else 64, rng),
        "itl_6_streams": streams_itl(config, 6, 32 if a.quick else 64, seed=1),
    }
    if on_gpu:
        try:   # the profiler's view of the GPU: kept apart, so that a profiler failure loses only this part
            out["gpu_busy"] = [gpu_busy(engine, b, 60, rng) for b in (1, 32)]
        except Exception as exc:  # noqa: BLE001
            out["gpu_busy_error"] = repr(exc)
    RESULTS.mkdir(exist_ok=True)
    name = f"engine_bench_{a.dtype}" + ("_gpu" if on_gpu else "")
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=2))
    where = out["machine"]["gpu"] or f"{out['machine']['cpus']} threads"
    lines = [f"# Engine benchmark ({out['model']}, {a.dtype}, {out['device']}, {where})", "",
             f"Machine: {out['machine']['platform']}, {out['machine']['processor']}, torch {torch.__version__}", "",
             "| decode batch | step ms |", "|---|---|"]
    lines += [f"| {b} | {ms} |" for b, ms in out["decode_step_ms"].items()]
    lines += ["", "| prompt tokens | prefill tok/s |", "|---|---|"]
    lines += [f"| {n} | {v} |" for n, v in out["prefill_tok_s"].items()]
    b = out["batching"]
    lines += ["", f"8 requests x {b['output']} tokens: model.generate one by one {b['generate_one_by_one_s']} s, "
                  f"engine batched {b['engine_batched_s']} s: **{b['speedup']}x**",
              f"6 concurrent streams: ITL p50 {out['itl_6_streams']['itl_p50_ms']} ms, "
              f"p99 {out['itl_6_streams']['itl_p99_ms']} ms"]
    for busy in out.get("gpu_busy", []):
        lines.append(f"Decode step of batch {busy['batch']}: {busy['step_ms']} ms wall; its {busy['kernels']} kernels "
                     f"run {busy['kernel_ms']} ms (GPU busy {busy['busy_share']:.0%})")
    if "gpu_busy_error" in out:
        lines.append(f"The profiler failed: {out['gpu_busy_error']}")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
