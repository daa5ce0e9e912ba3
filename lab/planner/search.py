"""Goodput per GPU of every placement on a GPU budget, and the best one."""
from __future__ import annotations

from dataclasses import dataclass, replace

from .simulator import SLO, Hardware, Placement, Workload, attainment, goodput, simulate


@dataclass(frozen=True)
class PlacementResult:
    placement: Placement
    goodput: float            # req/s for the whole placement

    @property
    def per_gpu(self) -> float:
        return self.goodput / self.placement.total_gpus


def candidates(gpus: int, chunk: int = 512) -> list[Placement]:
    if gpus < 1:
        raise ValueError(f"the GPU budget must be at least 1, got {gpus}")
    out = [Placement("colocated", gpus), Placement("chunked", gpus, chunk=chunk)]
    out += [Placement("disaggregated", prefill=p, decode=gpus - p) for p in range(1, gpus)]
    return out


def plan(hw: Hardware, workload: Workload, slo: SLO, gpus: int, chunk: int = 512) -> list[PlacementResult]:
    """Every placement of `gpus` GPUs, best goodput per GPU first."""
    results = [PlacementResult(p, goodput(hw, p, workload, slo)) for p in candidates(gpus, chunk)]
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
    if gpus < 2:
        raise ValueError(f"comparing with disaggregation needs a budget of at least 2 GPUs, got {gpus}")
    points = []
    for n in prompts:
        results = plan(hw, replace(workload, prompt_tokens=n), slo, gpus, chunk)
        points.append(SweepPoint(n, next(r for r in results if r.placement.kind != "disaggregated"),
                                 next(r for r in results if r.placement.kind == "disaggregated")))
    return points


def crossovers(points: list[SweepPoint]) -> list[tuple[SweepPoint, SweepPoint]]:
    """Neighbouring lengths between which one family stops winning and the other wins (ties skipped)."""
    decided = [p for p in points if p.winner != "tie"]
    return [(a, b) for a, b in zip(decided, decided[1:]) if a.winner != b.winner]
