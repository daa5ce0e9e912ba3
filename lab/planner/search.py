"""Goodput per GPU of every placement on a GPU budget, and the best one."""
from __future__ import annotations

from dataclasses import dataclass, replace

from engine.cluster.topology import Mode

from . import cost_model as cm
from .goodput import attainment, goodput
from .scenario import SLO, Hardware, Placement, Workload
from .simulator import simulate


@dataclass(frozen=True)
class PlacementResult:
    placement: Placement
    goodput: float            # req/s for the whole placement

    @property
    def per_gpu(self) -> float:
        return self.goodput / self.placement.total_gpus


TENSOR_PARALLEL = (1, 2, 4, 8)   # GPUs per instance tried: within one 8-GPU node, as the engines run it


def candidates(hw: Hardware, gpus: int, chunk: int = 512) -> list[Placement]:
    """Every placement that uses all `gpus` GPUs, for every tensor-parallel size that holds the model;
    prefill and decode instances may differ in size, as DistServe places them."""
    if gpus < 1:
        raise ValueError(f"the GPU budget must be at least 1, got {gpus}")
    sizes = [tp for tp in TENSOR_PARALLEL if tp <= gpus and cm.fits(hw.model, hw.device.group(tp))]
    if not sizes:
        cm.check_fits(hw.model, hw.device.group(max(tp for tp in TENSOR_PARALLEL if tp <= gpus)))
    out = []
    for tp in (tp for tp in sizes if gpus % tp == 0):
        out += [Placement(Mode.COLOCATED, gpus // tp, tp=tp), Placement(Mode.CHUNKED, gpus // tp, chunk=chunk, tp=tp)]
    for prefill_tp in sizes:
        for decode_tp in sizes:
            for p in range(1, gpus // prefill_tp + 1):
                left = gpus - p * prefill_tp
                if left >= decode_tp and left % decode_tp == 0:
                    out.append(Placement(Mode.DISAGGREGATED, prefill=p, decode=left // decode_tp, tp=prefill_tp,
                                         decode_tp=decode_tp))
    return out


def plan(hw: Hardware, workload: Workload, slo: SLO, gpus: int, chunk: int = 512) -> list[PlacementResult]:
    """Every placement of `gpus` GPUs, best goodput per GPU first."""
    results = [PlacementResult(p, goodput(hw, p, workload, slo)) for p in candidates(hw, gpus, chunk)]
    return sorted(results, key=lambda r: r.per_gpu, reverse=True)


def attainment_curve(hw: Hardware, placement: Placement, workload: Workload, slo: SLO,
                     rates: list[float]) -> list[float]:
    """SLO attainment at each request rate (the crossover plot)."""
    return [attainment(simulate(hw, placement, replace(workload, rate=r)), slo) for r in rates]


TIE = 0.05   # goodputs within 5% are a tie: the simulated Poisson sample moves them about that much


@dataclass(frozen=True)
class SweepPoint:
    prompt_tokens: int
    colocated: PlacementResult        # the better of colocated and chunked
    disaggregated: PlacementResult    # the best xPyD split

    @property
    def winner(self) -> str:
        """"xPyD", "colocated" (or chunked) or "tie"."""
        if self.disaggregated.per_gpu > (1 + TIE) * self.colocated.per_gpu:
            return "xPyD"
        if self.colocated.per_gpu > (1 + TIE) * self.disaggregated.per_gpu:
            return "colocated"
        return "tie"


def prompt_sweep(hw: Hardware, workload: Workload, slo: SLO, gpus: int, prompts: list[int],
                 chunk: int = 512) -> list[SweepPoint]:
    """The best colocated and the best disaggregated placement at each prompt length (the crossover plot)."""
    if not any(p.mode == Mode.DISAGGREGATED for p in candidates(hw, gpus, chunk)):
        raise ValueError(f"no prefill/decode split of {gpus} GPUs holds {hw.model.name} on both sides; "
                         f"a sweep against disaggregation needs a larger budget")
    points = []
    for n in prompts:
        results = plan(hw, replace(workload, prompt_tokens=n), slo, gpus, chunk)
        points.append(SweepPoint(n, next(r for r in results if r.placement.mode != Mode.DISAGGREGATED),
                                 next(r for r in results if r.placement.mode == Mode.DISAGGREGATED)))
    return points


def crossovers(points: list[SweepPoint]) -> list[tuple[SweepPoint, SweepPoint]]:
    """Neighbouring lengths between which one family stops winning and the other wins (ties skipped)."""
    decided = [p for p in points if p.winner != "tie"]
    return [(a, b) for a, b in zip(decided, decided[1:]) if a.winner != b.winner]
