"""The planner page's charts: goodput per placement, attainment against rate, the prompt-length
crossover, and the calibration of the cost model against this machine."""
from __future__ import annotations

import math

import plotly.graph_objects as go

from ..figures import layout, log_range
from ..i18n import num, t
from .search import PlacementResult, SweepPoint


def goodput_bars(results: list[PlacementResult], title: str, lang: str) -> go.Figure:
    fig = go.Figure(go.Bar(x=[r.placement.label for r in results], y=[r.per_gpu for r in results]))
    return layout(fig, lang, title, t(lang, "axis_placement"), t(lang, "axis_rps_per_gpu"), 320)


def attainment_lines(rates: list[float], curves: dict[str, list[float]], target: float, title: str,
                     lang: str) -> go.Figure:
    fig = go.Figure([go.Scatter(x=rates, y=curve, name=label) for label, curve in curves.items()])
    fig.add_hline(y=target, line_dash="dash",
                  annotation_text=t(lang, "mark_slo_target", target=num(lang, target, ".0%")))
    return layout(fig, lang, title, t(lang, "axis_rps"), t(lang, "axis_slo_attainment"))


def crossover_lines(points: list[SweepPoint], crossings: list[tuple[SweepPoint, SweepPoint]],
                    title: str, lang: str) -> go.Figure:
    """The best colocated and the best xPyD goodput per GPU at each prompt length, on a log x axis, each
    change of winner shaded between the two lengths it lies between. A shape on a log axis takes data
    values (tokens), an annotation log10 ones: each label sits over its band's middle, one row lower
    than its neighbour's, so two neighbouring bands' labels never overlap."""
    x = [p.prompt_tokens for p in points]
    fig = go.Figure([
        go.Scatter(x=x, y=[p.colocated.per_gpu for p in points], name=t(lang, "legend_best_colocated"),
                   mode="lines+markers",
                   text=[p.colocated.placement.label for p in points]),
        go.Scatter(x=x, y=[p.disaggregated.per_gpu for p in points], name=t(lang, "legend_best_xpyd"),
                   mode="lines+markers",
                   text=[p.disaggregated.placement.label for p in points]),
    ])
    for i, (a, b) in enumerate(crossings):
        fig.add_vrect(x0=a.prompt_tokens, x1=b.prompt_tokens, fillcolor="orange", opacity=0.2,
                      line=dict(color="darkorange", width=1))   # two neighbouring bands stay two
        fig.add_annotation(x=math.log10(math.sqrt(a.prompt_tokens * b.prompt_tokens)), xref="x",
                           y=1 - 0.09 * (i % 2), yref="paper", yanchor="top", showarrow=False,
                           text=t(lang, "mark_crossover_change", before=t(lang, f"winner_{a.winner}"),
                                  after=t(lang, f"winner_{b.winner}")))
    fig.update_xaxes(type="log", range=log_range(x, pad=1.25))
    return layout(fig, lang, title, t(lang, "axis_prompt_tokens"), t(lang, "axis_goodput_per_gpu"))


def _span(lengths: list[int], lang: str) -> str:
    """Neighbouring lengths of the sweep as "at 64" or "from 512 to 4096"."""
    if len(lengths) == 1:
        return t(lang, "plan_sweep_at", n=lengths[0])
    return t(lang, "plan_sweep_range", low=lengths[0], high=lengths[-1])


def sweep_outcomes(points: list[SweepPoint]) -> list[str]:
    """Each length's outcome: the winner, "tie", or "none" where no placement of either kind meets the
    SLOs at any rate (both goodputs 0: not a tie a learner could use)."""
    return ["none" if p.colocated.per_gpu == 0 and p.disaggregated.per_gpu == 0 else p.winner for p in points]


def sweep_pattern(points: list[SweepPoint]) -> str:
    """Which way the sweep came out, from its winners (ties and lengths no placement serves left out):
    "colocated_then_xpyd", "xpyd_then_colocated", "xpyd", "colocated", "mixed" (the winner changes
    more than once), "tie" (no length has a winner) or "none" (no length is served)."""
    outcomes = sweep_outcomes(points)
    decided = [o for o in outcomes if o in ("xPyD", "colocated")]
    if not decided:
        return "none" if set(outcomes) == {"none"} else "tie"
    changes = sum(a != b for a, b in zip(decided, decided[1:]))
    if changes == 0:
        return "xpyd" if decided[0] == "xPyD" else "colocated"
    if changes == 1:
        return "colocated_then_xpyd" if decided[0] == "colocated" else "xpyd_then_colocated"
    return "mixed"


def sweep_sentence(points: list[SweepPoint], lang: str) -> str:
    """What the sweep computed, in words: which kind wins at which prompt lengths (runs of neighbouring
    lengths with the same outcome), then the reading that fits that pattern."""
    outcomes = sweep_outcomes(points)
    runs: list[tuple[str, list[int]]] = []
    for point, outcome in zip(points, outcomes):
        if runs and runs[-1][0] == outcome:
            runs[-1][1].append(point.prompt_tokens)
        else:
            runs.append((outcome, [point.prompt_tokens]))
    parts = []
    for outcome in dict.fromkeys(outcomes):   # each outcome once, in the order the lengths first show it
        where = t(lang, "plan_sweep_and").join(_span(lengths, lang) for o, lengths in runs if o == outcome)
        parts.append(t(lang, f"plan_sweep_part_{outcome}", where=where))
    pattern, values = sweep_pattern(points), {}
    if pattern == "mixed":
        decided = [p for p, o in zip(points, outcomes) if o in ("xPyD", "colocated")]
        closest = min(decided, key=_margin)
        values = dict(changes=sum(a.winner != b.winner for a, b in zip(decided, decided[1:])))
        if math.isinf(_margin(closest)):   # at each length only one kind meets the SLOs at all
            pattern = "mixed_apart"
        else:
            values.update(gap=round(100 * _margin(closest)), n=closest.prompt_tokens)
    return (t(lang, "plan_sweep_result", parts="; ".join(parts)) + " "
            + t(lang, f"plan_sweep_why_{pattern}", **values))


def _margin(p: SweepPoint) -> float:
    """How much more the winner serves per GPU than the other kind, as a share of the other's."""
    low, high = sorted((p.colocated.per_gpu, p.disaggregated.per_gpu))
    return high / low - 1 if low > 0 else float("inf")


def calibration_scatter(rows: list[dict], target_pct: float, title: str, lang: str) -> go.Figure:
    """Predicted against measured step time, one colour per kind of step; the dotted band is the target."""
    top = max(max(r["measured_ms"], r["predicted_ms"]) for r in rows) * 1.3
    low = min(min(r["measured_ms"], r["predicted_ms"]) for r in rows) / 1.3
    band = [low, top]
    fig = go.Figure([
        go.Scatter(x=band, y=[v * (1 + target_pct / 100) for v in band], mode="lines", line_dash="dot",
                   name=f"+{target_pct:.0f}%", line_color="grey"),
        go.Scatter(x=band, y=band, mode="lines", name=t(lang, "legend_exact"), line_color="black"),
        go.Scatter(x=band, y=[v * (1 - target_pct / 100) for v in band], mode="lines", line_dash="dot",
                   name=f"-{target_pct:.0f}%", line_color="grey"),
    ])
    for kind in dict.fromkeys(r["step"] for r in rows):
        mine = [r for r in rows if r["step"] == kind]
        fig.add_trace(go.Scatter(x=[r["measured_ms"] for r in mine], y=[r["predicted_ms"] for r in mine],
                                 mode="markers", name=kind, marker=dict(size=11),
                                 text=[f"{r['size']}: {num(lang, r['error_pct'], '+.0f')}%" for r in mine]))
    fig.update_xaxes(type="log")
    fig.update_yaxes(type="log")
    return layout(fig, lang, title, t(lang, "axis_measured_step_ms"), t(lang, "axis_predicted_step_ms"), 380)


def efficiency_lines(calibration: dict, title: str, lang: str) -> go.Figure:
    fig = go.Figure([
        go.Scatter(x=[p["tokens"] for p in calibration[key]], y=[p["share_of_peak"] for p in calibration[key]],
                   name=t(lang, f"legend_{key}"), mode="lines+markers")
        for key in ("gemm_efficiency", "attention_efficiency")])
    fig.update_xaxes(type="log")
    return layout(fig, lang, title, t(lang, "axis_tokens_in_step"), t(lang, "axis_share_of_peak"), 320)


def pareto_lines(fronts: dict, title: str, lang: str) -> go.Figure:
    """Each kind's Pareto front: output tokens/s per GPU against tokens/s per user."""
    fig = go.Figure([go.Scatter(x=[p.tokens_per_user for p in front], y=[p.tokens_per_gpu for p in front],
                                text=[p.placement for p in front], name=t(lang, f"mode_{mode}"),
                                mode="lines+markers") for mode, front in fronts.items()])
    return layout(fig, lang, title, t(lang, "axis_tokens_per_user"), t(lang, "axis_tokens_per_gpu"))
