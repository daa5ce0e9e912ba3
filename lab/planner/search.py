"""Goodput per GPU of every placement on a GPU budget, and the best one."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from engine.cluster.topology import Mode
from engine.metrics import stats

from . import cost_model as cm
from .goodput import attainment, goodput, rate_bound
from .scenario import SLO, Hardware, Placement, Workload
from .simulator import simulate


@dataclass(frozen=True)
class PlacementResult:
    placement: Placement
    goodput: float            # req/s for the whole placement
    at_bound: bool = False    # the SLOs held even at the hardware's bound: the goodput is that bound
    ttft_s: tuple[float, float] = (0.0, 0.0)   # P50, P90 at the goodput rate
    tpot_s: tuple[float, float] = (0.0, 0.0)
    output_tokens: float = 0.0                  # mean answer length of the workload
    dollars_per_hour: float = 0.0               # the placement's GPUs at their price per GPU-hour (0: unpriced)

    @property
    def per_gpu(self) -> float:
        return self.goodput / self.placement.total_gpus

    @property
    def tokens_per_dollar(self) -> float:
        """Output tokens per US$ at the goodput rate (0 where the GPUs have no price)."""
        return self.goodput * self.output_tokens * 3600 / self.dollars_per_hour if self.dollars_per_hour else 0.0

    @property
    def tokens_per_gpu(self) -> float:
        """Output tokens/s per GPU at the goodput rate."""
        return self.per_gpu * self.output_tokens

    @property
    def tokens_per_user(self) -> float:
        """Output tokens/s one user sees while their answer streams (1 / median TPOT)."""
        return 1 / self.tpot_s[0] if self.tpot_s[0] > 0 else 0.0


@dataclass(frozen=True)
class PlanReport:
    results: list[PlacementResult]                 # the placements that can run, best goodput per GPU first
    dropped: list[tuple[str, str]] = field(default_factory=list)   # (placement, why it cannot run)


def _percentiles(values: list[float]) -> tuple[float, float]:
    """P50 and P90, as the engine's own metrics compute them; (0, 0) for a run with no requests."""
    if not values:
        return 0.0, 0.0
    summary = stats(values)
    return summary["p50"], summary["p90"]


def evaluate(hw: Hardware, placement: Placement, workload: Workload, slo: SLO) -> PlacementResult:
    """A placement's goodput, and what an engineer checks at that rate: TTFT and TPOT percentiles."""
    rate = goodput(hw, placement, workload, slo)
    reqs = simulate(hw, placement, replace(workload, rate=rate)) if rate > 0 else []
    return PlacementResult(placement, rate, rate >= rate_bound(hw, placement, workload),
                           _percentiles([r.ttft for r in reqs]), _percentiles([r.tpot for r in reqs if r.output > 1]),
                           workload.output_tokens, hw.dollars_per_hour(placement))


TENSOR_PARALLEL = (1, 2, 4, 8)   # GPUs per instance tried: within one 8-GPU node, as the engines run it


def candidates(hw: Hardware, gpus: int, chunk: int = 512, ep: int = 1, decode_ep: int = 0) -> list[Placement]:
    """Every placement that uses all `gpus` GPUs, for every tensor-parallel size that holds the model;
    prefill and decode instances may differ in size, as DistServe places them, and in GPU type
    (Hardware.prefill_device, decode_device). A MoE model's experts are split over `ep` GPUs of each
    colocated or prefill instance and `decode_ep` (0: ep) of each decode instance, or over all of an
    instance smaller than that."""
    if gpus < 1:
        raise ValueError(f"the GPU budget must be at least 1, got {gpus}")
    if ep < 1 or decode_ep < 0:
        raise ValueError(f"expert parallelism needs at least 1 GPU, got EP{ep} and EP{decode_ep}")

    def sizes_of(device) -> list[int]:
        return [tp for tp in TENSOR_PARALLEL if tp <= gpus and cm.fits(hw.model, device.group(tp))]

    def experts_over(tp: int, want: int) -> int:
        return min(want, tp) if hw.model.is_moe else 1

    sizes = sizes_of(hw.device)
    prefill_sizes, decode_sizes = sizes_of(hw.phase("prefill").device), sizes_of(hw.phase("decode").device)
    if not sizes and not (prefill_sizes and decode_sizes):
        cm.check_fits(hw.model, hw.device.group(max(tp for tp in TENSOR_PARALLEL if tp <= gpus)))
    out = []
    for tp in (tp for tp in sizes if gpus % tp == 0):
        e = experts_over(tp, ep)
        if tp % e == 0:
            out += [Placement(Mode.COLOCATED, gpus // tp, tp=tp, ep=e),
                    Placement(Mode.CHUNKED, gpus // tp, chunk=chunk, tp=tp, ep=e)]
    for prefill_tp in prefill_sizes:
        for decode_tp in decode_sizes:
            pe, de = experts_over(prefill_tp, ep), experts_over(decode_tp, decode_ep or ep)
            if prefill_tp % pe or decode_tp % de:
                continue
            for p in range(1, gpus // prefill_tp + 1):
                left = gpus - p * prefill_tp
                if left >= decode_tp and left % decode_tp == 0:
                    out.append(Placement(Mode.DISAGGREGATED, prefill=p, decode=left // decode_tp, tp=prefill_tp,
                                         decode_tp=decode_tp, ep=pe, decode_ep=de if de != pe else 0))
    return out


def plan_report(hw: Hardware, workload: Workload, slo: SLO, gpus: int, chunk: int = 512, ep: int = 1,
                decode_ep: int = 0) -> PlanReport:
    """Every placement of `gpus` GPUs: those that can run, best goodput per GPU first, and the others
    with the reason (a request's KV that does not fit beside the weights, say)."""
    results, dropped = [], []
    for p in candidates(hw, gpus, chunk, ep, decode_ep):
        try:
            results.append(evaluate(hw, p, workload, slo))
        except ValueError as exc:
            dropped.append((p.label, str(exc)))
    if not results:
        raise ValueError("no placement of these GPUs can serve this workload: " + dropped[0][1])
    return PlanReport(sorted(results, key=lambda r: r.per_gpu, reverse=True), dropped)


def plan(hw: Hardware, workload: Workload, slo: SLO, gpus: int, chunk: int = 512, ep: int = 1,
         decode_ep: int = 0) -> list[PlacementResult]:
    """Every placement of `gpus` GPUs that can run, best goodput per GPU first."""
    return plan_report(hw, workload, slo, gpus, chunk, ep, decode_ep).results


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
                 chunk: int = 512, ep: int = 1, decode_ep: int = 0) -> list[SweepPoint]:
    """The best colocated and the best disaggregated placement at each prompt length (the crossover plot)."""
    if not any(p.mode == Mode.DISAGGREGATED for p in candidates(hw, gpus, chunk, ep, decode_ep)):
        raise ValueError(f"no prefill/decode split of {gpus} GPUs holds {hw.model.name} on both sides; "
                         f"a sweep against disaggregation needs a larger budget")
    points = []
    for n in prompts:
        results = plan(hw, replace(workload, prompt_tokens=n), slo, gpus, chunk, ep, decode_ep)
        points.append(SweepPoint(n, next(r for r in results if r.placement.mode != Mode.DISAGGREGATED),
                                 next(r for r in results if r.placement.mode == Mode.DISAGGREGATED)))
    return points


def crossovers(points: list[SweepPoint]) -> list[tuple[SweepPoint, SweepPoint]]:
    """Neighbouring lengths between which one family stops winning and the other wins (ties skipped)."""
    decided = [p for p in points if p.winner != "tie"]
    return [(a, b) for a, b in zip(decided, decided[1:]) if a.winner != b.winner]


PARETO_RATES = 8   # request rates tried per placement, up to its hardware bound


@dataclass(frozen=True)
class ParetoPoint:
    placement: str
    mode: Mode
    rate: float               # requests/s offered
    tokens_per_gpu: float     # output tokens/s per GPU
    tokens_per_user: float    # output tokens/s one streaming user sees (1 / median TPOT)


def pareto_front(hw: Hardware, workload: Workload, slo: SLO, gpus: int, chunk: int = 512, ep: int = 1,
                 decode_ep: int = 0) -> dict[Mode, list[ParetoPoint]]:
    """Throughput per GPU against speed per user, as AIConfigurator draws it, for each kind of
    placement: every placement that can run at rates up to its hardware bound, the points whose P90
    TTFT meets the SLO, and of those the ones no other point of the kind beats on both axes."""
    points: dict[Mode, list[ParetoPoint]] = {m: [] for m in Mode}
    for p in candidates(hw, gpus, chunk, ep, decode_ep):
        try:
            bound = rate_bound(hw, p, workload)
            for k in range(1, PARETO_RATES + 1):
                rate = bound * k / PARETO_RATES
                reqs = simulate(hw, p, replace(workload, rate=rate))
                ttft_p90 = _percentiles([r.ttft for r in reqs])[1]
                tpot_p50 = _percentiles([r.tpot for r in reqs if r.output > 1])[0]
                if ttft_p90 <= slo.ttft_s and tpot_p50 > 0:
                    points[p.mode].append(ParetoPoint(p.label, p.mode, rate, rate * workload.output_tokens / gpus,
                                                      1 / tpot_p50))
        except ValueError:
            continue   # cannot run: plan_report says why
    return {mode: _front(found) for mode, found in points.items() if found}


def _front(points: list[ParetoPoint]) -> list[ParetoPoint]:
    """The points no other beats on both axes, from the fastest per user to the most per GPU."""
    front, best_per_gpu = [], -1.0
    for pt in sorted(points, key=lambda q: (-q.tokens_per_user, -q.tokens_per_gpu)):
        if pt.tokens_per_gpu > best_per_gpu:
            front.append(pt)
            best_per_gpu = pt.tokens_per_gpu
    return front
