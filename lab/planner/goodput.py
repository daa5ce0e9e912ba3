"""SLO attainment of a simulated run, and goodput: the highest rate that still meets the SLOs
(DistServe's definition)."""
from __future__ import annotations

from dataclasses import replace

from .scenario import SLO, Hardware, Placement, Request, Workload
from .simulator import simulate


def attainment(reqs: list[Request], slo: SLO) -> float:
    return sum(r.ttft <= slo.ttft_s and r.tpot <= slo.tpot_s for r in reqs) / len(reqs)


def goodput(hw: Hardware, placement: Placement, workload: Workload, slo: SLO, iterations: int = 12) -> float:
    """The highest request rate whose SLO attainment meets the target (DistServe's goodput), req/s."""
    def ok(rate: float) -> bool:
        return attainment(simulate(hw, placement, replace(workload, rate=rate)), slo) >= slo.attainment
    low, high = 0.0, 0.25
    while ok(high):
        low, high = high, high * 2
        if high > 1e5:
            return high
    for _ in range(iterations):
        middle = (low + high) / 2
        low, high = (middle, high) if ok(middle) else (low, middle)
    return low
