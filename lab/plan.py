"""`python -m lab.plan`: goodput per GPU of each placement, and the best split of a GPU budget.

Example (DistServe's setting): python -m lab.plan --model OPT-13B --gpu A100-80GB --gpus 3 \\
    --prompt 512 --output 64 --ttft 0.4 --tpot 0.04
Where the winner changes with the prompt length: add --sweep 64,128,256,512,1024,2048
For scripts: --json prints the plan as one JSON object. Tokens/s per GPU against per user: --pareto
Mixture of experts on mixed GPUs: python -m lab.plan --model Qwen3-235B-A22B --gpu H200 --gpus 8 --ep 8 \
    --prefill-gpu H200 --decode-gpu H100-SXM --prompt 4000 --output 500 --ttft 2 --tpot 0.05 --json
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

from engine.cluster.topology import Mode

from .planner.hardware import GPUS, LINKS, MODELS
from .planner.model_config import MOE_MODELS, model_from_config
from .planner.search import (ParetoPoint, PlacementResult, PlanReport, SweepPoint, crossovers, pareto_front,
                             plan_report, prompt_sweep)
from .planner.scenario import SLO, Hardware, Workload


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.plan", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="Llama-3.1-8B", choices=list(MODELS) + list(MOE_MODELS))
    p.add_argument("--model-config", metavar="PATH",
                   help="a local Hugging Face config.json (or its folder) instead of a preset --model")
    p.add_argument("--gpu", default="H100-SXM", choices=list(GPUS))
    p.add_argument("--prefill-gpu", choices=list(GPUS), help="the prefill pool's GPU (default: --gpu)")
    p.add_argument("--decode-gpu", choices=list(GPUS), help="the decode pool's GPU (default: --gpu)")
    p.add_argument("--price", type=float, help="US$ per GPU-hour of --gpu (default: an assumed figure per GPU type)")
    p.add_argument("--prefill-price", type=float, help="US$ per GPU-hour of --prefill-gpu")
    p.add_argument("--decode-price", type=float, help="US$ per GPU-hour of --decode-gpu")
    p.add_argument("--ep", type=int, default=1,
                   help="MoE: GPUs of each colocated or prefill instance that split the experts (capped at its size)")
    p.add_argument("--decode-ep", type=int, default=0, help="MoE: the same for decode instances (default: --ep)")
    p.add_argument("--expert-imbalance", type=float, default=1.0,
                   help="MoE under EP: the busiest GPU's expert load over the mean (assumed 1.0: balanced)")
    p.add_argument("--link", default="NVLink 4", choices=list(LINKS))
    p.add_argument("--gpus", type=int, default=4, help="GPU budget")
    p.add_argument("--prompt", type=int, default=512, help="mean prompt tokens")
    p.add_argument("--output", type=int, default=64, help="mean output tokens")
    p.add_argument("--spread", type=float, default=0.0, help="lengths uniform in +-spread (0-1)")
    p.add_argument("--ttft", type=float, default=0.4, help="TTFT SLO, seconds (P90)")
    p.add_argument("--tpot", type=float, default=0.04, help="TPOT SLO, seconds (P90)")
    p.add_argument("--fp8-weights", action="store_true", help="FP8 weights (GPUs with FP8 tensor cores)")
    p.add_argument("--fp8-kv", action="store_true", help="an FP8 KV cache (GPUs with FP8 tensor cores)")
    p.add_argument("--efficiency", type=float, default=Hardware.efficiency,
                   help="share of the datasheet peaks the GPUs reach")
    p.add_argument("--chunk", type=int, default=512)
    p.add_argument("--sweep", help="comma-separated prompt lengths: best colocated vs best xPyD at each")
    p.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    p.add_argument("--pareto", action="store_true",
                   help="the Pareto front of each kind: output tokens/s per GPU against tokens/s per user")
    a = p.parse_args(argv)
    try:
        model = model_from_config(a.model_config) if a.model_config else {**MODELS, **MOE_MODELS}[a.model]
        a.model = model.name
        hw = Hardware(model, _gpu(a.gpu, a.price, a), LINKS[a.link], a.efficiency,
                      prefill_device=_gpu(a.prefill_gpu or a.gpu, a.prefill_price or a.price, a),
                      decode_device=_gpu(a.decode_gpu or a.gpu, a.decode_price or a.price, a),
                      ).with_fp8(a.fp8_weights, a.fp8_kv)
        workload, slo = Workload(1.0, a.prompt, a.output, spread=a.spread), SLO(a.ttft, a.tpot)
        if a.sweep:
            points = prompt_sweep(hw, workload, slo, a.gpus, _lengths(a.sweep), a.chunk, a.ep, a.decode_ep)
        elif a.pareto:
            fronts = pareto_front(hw, workload, slo, a.gpus, a.chunk, a.ep, a.decode_ep)
        else:
            report = plan_report(hw, workload, slo, a.gpus, a.chunk, a.ep, a.decode_ep)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if a.json and not (a.sweep or a.pareto):
        print(json.dumps(plan_json(report, vars(a)), indent=1))
        return 0
    gpus = a.gpu if (a.prefill_gpu or a.gpu) == (a.decode_gpu or a.gpu) == a.gpu else \
        f"{a.gpu} (prefill {a.prefill_gpu or a.gpu}, decode {a.decode_gpu or a.gpu})"
    print(f"{a.model} on {a.gpus} x {gpus} ({a.link}); prompt {a.prompt}, output {a.output}; "
          f"SLO P90 TTFT <= {a.ttft} s, TPOT <= {a.tpot} s")
    if a.sweep:
        _print_sweep(points)
    elif a.pareto:
        _print_pareto(fronts)
    else:
        _print_plan(report)
    return 0


def _print_pareto(fronts: dict[Mode, list[ParetoPoint]]) -> None:
    print(f"{'kind':<15}{'placement':<28}{'req/s':>9}{'tok/s/user':>12}{'tok/s/GPU':>11}")
    for mode, front in fronts.items():
        for pt in front:
            print(f"{mode:<15}{pt.placement:<28}{pt.rate:>9.2f}{pt.tokens_per_user:>12.1f}{pt.tokens_per_gpu:>11.0f}")


def _result_json(r: PlacementResult) -> dict:
    return {"placement": r.placement.label, "mode": str(r.placement.mode), "gpus": r.placement.total_gpus,
            "goodput_rps": r.goodput, "goodput_rps_per_gpu": r.per_gpu,
            "output_tokens_per_s_per_gpu": r.tokens_per_gpu, "output_tokens_per_s_per_user": r.tokens_per_user,
            "ttft_s": {"p50": r.ttft_s[0], "p90": r.ttft_s[1]}, "tpot_s": {"p50": r.tpot_s[0], "p90": r.tpot_s[1]},
            "at_hardware_bound": r.at_bound, "dollars_per_hour": r.dollars_per_hour,
            "output_tokens_per_dollar": r.tokens_per_dollar,
            "goodput_requests_per_dollar": r.goodput * 3600 / r.dollars_per_hour if r.dollars_per_hour else 0.0}


def plan_json(report: PlanReport, inputs: dict) -> dict:
    """The plan as scripts read it: the inputs, the best placement of each kind, the recommendation, and
    why the placements that cannot run were dropped."""
    best = {}
    for r in report.results:   # best first
        best.setdefault(str(r.placement.mode), _result_json(r))
    return {"inputs": {k: v for k, v in inputs.items() if k not in ("json", "sweep")},
            "recommendation": _result_json(report.results[0]),
            "best_per_kind": {str(m): best.get(str(m)) for m in Mode},
            "dropped": [{"placement": label, "reason": why} for label, why in report.dropped]}


def _print_plan(report: PlanReport) -> None:
    print(f"{'placement':<28}{'goodput req/s':>14}{'per GPU':>9}{'tok/s/GPU':>11}{'TTFT P90 s':>12}"
          f"{'TPOT P90 ms':>13}")
    for r in report.results:
        bound = "  (at the hardware bound)" if r.at_bound else ""
        print(f"{r.placement.label:<28}{r.goodput:>14.2f}{r.per_gpu:>9.2f}{r.tokens_per_gpu:>11.0f}"
              f"{r.ttft_s[1]:>12.3f}{1000 * r.tpot_s[1]:>13.1f}{bound}")
    for label, why in report.dropped:
        print(f"dropped {label}: {why}")
    print(f"best: {report.results[0].placement.label}")


def _print_sweep(points: list[SweepPoint]) -> None:
    print(f"{'prompt':>7}  {'best colocated':<24}{'per GPU':>8}  {'best xPyD':<10}{'per GPU':>8}  winner")
    for pt in points:
        print(f"{pt.prompt_tokens:>7}  {pt.colocated.placement.label:<24}{pt.colocated.per_gpu:>8.2f}  "
              f"{pt.disaggregated.placement.label:<10}{pt.disaggregated.per_gpu:>8.2f}  {pt.winner}")
    for x, y in crossovers(points):
        print(f"crossover between {x.prompt_tokens} and {y.prompt_tokens} tokens: {x.winner} -> {y.winner}")


def _gpu(name: str, price: float | None, a: argparse.Namespace):
    """A GPU preset at the given price per GPU-hour (else its assumed one) and expert imbalance."""
    if price is not None and price < 0 or not a.expert_imbalance >= 1.0:
        raise ValueError("prices must be >= 0 US$ per GPU-hour and --expert-imbalance >= 1")
    gpu = GPUS[name]
    return replace(gpu, price_per_hour=gpu.price_per_hour if price is None else price,
                   expert_imbalance=a.expert_imbalance)


def _lengths(text: str) -> list[int]:
    try:
        lengths = [int(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"--sweep takes comma-separated prompt lengths such as 128,512,2048, got {text!r}") from None
    if any(n < 1 for n in lengths):
        raise ValueError(f"prompt lengths must be >= 1, got {text!r}")
    return lengths


if __name__ == "__main__":
    sys.exit(main())
