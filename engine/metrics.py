"""Serving metrics with the definitions of vLLM's benchmark client.

TTFT: request sent -> first token. ITL: every gap between consecutive tokens, pooled over all
requests. TPOT: per request (E2E - TTFT) / (output tokens - 1), undefined for one token.
E2E: sent -> last token. Goodput: requests/s that met every SLO at the load sent (vLLM bench's
--goodput); DistServe's goodput is another figure, the highest rate at which 90% meet them
(lab/planner computes that one).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PERCENTILES = (50, 90, 99)


@dataclass
class Timing:
    """One request seen from wherever it was measured: when it was sent, when each token came."""
    sent: float
    token_times: list[float] = field(default_factory=list)
    ok: bool = True

    @property
    def output_tokens(self) -> int:
        return len(self.token_times)

    @property
    def ttft(self) -> float | None:
        return self.token_times[0] - self.sent if self.token_times else None

    @property
    def e2e(self) -> float | None:
        return self.token_times[-1] - self.sent if self.token_times else None

    @property
    def itls(self) -> list[float]:
        t = self.token_times
        return [b - a for a, b in zip(t, t[1:])]

    @property
    def tpot(self) -> float | None:
        if len(self.token_times) < 2:
            return None
        return (self.e2e - self.ttft) / (len(self.token_times) - 1)


@dataclass(frozen=True)
class SLO:
    ttft: float | None = None   # seconds
    tpot: float | None = None   # seconds

    def met_by(self, t: Timing) -> bool:
        if not t.ok or t.ttft is None:
            return False
        if self.ttft is not None and t.ttft > self.ttft:
            return False
        # A one-token answer streams nothing after its first token: no TPOT to miss.
        return self.tpot is None or t.tpot is None or t.tpot <= self.tpot


def stats(values: list[float]) -> dict[str, float]:
    """mean, p50/p90/p99 and max; NaN for no values, so an empty run never looks fast."""
    if not values:
        return {"mean": float("nan"), **{f"p{p}": float("nan") for p in PERCENTILES}, "max": float("nan")}
    arr = np.asarray(values, dtype=float)
    out = {"mean": float(arr.mean())}
    out.update({f"p{p}": float(np.percentile(arr, p)) for p in PERCENTILES})
    out["max"] = float(arr.max())
    return out


@dataclass
class Summary:
    requests: int
    completed: int
    duration: float
    output_tokens: int
    ttft: dict[str, float]
    itl: dict[str, float]
    tpot: dict[str, float]
    e2e: dict[str, float]
    request_throughput: float
    output_throughput: float
    goodput: float | None
    slo_attainment: float | None


def summarize(timings: list[Timing], duration: float | None = None, slo: SLO | None = None) -> Summary:
    """duration defaults to first request sent -> last token received."""
    done = [t for t in timings if t.ok and t.token_times]
    if duration is None:
        duration = (max(t.token_times[-1] for t in done) - min(t.sent for t in timings)) if done else 0.0
    per_s = (lambda n: n / duration) if duration > 0 else (lambda n: float("nan"))
    tokens = sum(t.output_tokens for t in done)
    met = sum(slo.met_by(t) for t in timings) if slo else None
    return Summary(
        requests=len(timings),
        completed=len(done),
        duration=duration,
        output_tokens=tokens,
        ttft=stats([t.ttft for t in done]),
        itl=stats([gap for t in done for gap in t.itls]),
        tpot=stats([t.tpot for t in done if t.tpot is not None]),
        e2e=stats([t.e2e for t in done]),
        request_throughput=per_s(len(done)),
        output_throughput=per_s(tokens),
        goodput=per_s(met) if slo else None,
        slo_attainment=(met / len(timings) if timings else float("nan")) if slo else None,
    )


def format_summary(s: Summary) -> str:
    ms = lambda d, k: f"{d[k] * 1000:9.1f}"  # noqa: E731
    lines = [
        f"requests {s.completed}/{s.requests} completed in {s.duration:.2f} s, {s.output_tokens} output tokens",
        f"throughput {s.request_throughput:.2f} req/s, {s.output_throughput:.1f} output tok/s",
        f"{'metric (ms)':<12}{'mean':>9} {'p50':>9} {'p90':>9} {'p99':>9} {'max':>9}",
    ]
    for name in ("ttft", "itl", "tpot", "e2e"):
        d = getattr(s, name)
        lines.append(f"{name.upper():<12}" + " ".join(ms(d, k) for k in ("mean", "p50", "p90", "p99", "max")))
    if s.goodput is not None:
        lines.append(f"goodput {s.goodput:.2f} req/s, SLO attainment {s.slo_attainment:.0%}")
    return "\n".join(lines)
