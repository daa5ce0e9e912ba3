"""The planner page's charts: goodput per placement, attainment against rate, the prompt-length
crossover, and the calibration of the cost model against this machine."""
from __future__ import annotations

import math

import plotly.graph_objects as go

from ..figures import layout
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
    x = [p.prompt_tokens for p in points]
    fig = go.Figure([
        go.Scatter(x=x, y=[p.colocated.per_gpu for p in points], name=t(lang, "legend_best_colocated"),
                   mode="lines+markers",
                   text=[p.colocated.placement.label for p in points]),
        go.Scatter(x=x, y=[p.disaggregated.per_gpu for p in points], name=t(lang, "legend_best_xpyd"),
                   mode="lines+markers",
                   text=[p.disaggregated.placement.label for p in points]),
    ])
    for a, b in crossings:  # shapes on a log axis take log10 coordinates
        fig.add_vrect(x0=math.log10(a.prompt_tokens), x1=math.log10(b.prompt_tokens), fillcolor="orange",
                      opacity=0.2, line_width=0, annotation_text=t(lang, "mark_crossover"))
    fig.update_xaxes(type="log")
    return layout(fig, lang, title, t(lang, "axis_prompt_tokens"), t(lang, "axis_goodput_per_gpu"))


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
