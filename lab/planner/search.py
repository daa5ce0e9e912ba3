"""Goodput per GPU of every placement on a GPU budget, and the best one."""
from __future__ import annotations

from dataclasses import dataclass

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
    return [attainment(simulate(hw, placement, Workload(r, workload.prompt_tokens, workload.output_tokens,
                                                        workload.requests, workload.spread, workload.seed)), slo)
            for r in rates]
