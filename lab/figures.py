"""Plotly figures for the dashboard and the guided pages: plain functions of DataFrames, labelled in
the learner's language."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from .i18n import t
from .load_generator import RequestKind

INJECTION_COLOR = "rgba(214, 39, 40, 0.15)"


def layout(fig: go.Figure, title: str, x: str, y: str, height: int = 340) -> go.Figure:
    """One look for every chart of the lab: title, axis names, height and margins."""
    return fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, height=height,
                             margin=dict(l=50, r=20, t=50, b=40))


def _layout(fig: go.Figure, title: str, x: str, y: str) -> go.Figure:
    """The dashboard's charts: shorter, with the legend below so that narrow columns keep their width."""
    return layout(fig, title, x, y, 320).update_layout(legend=dict(orientation="h", y=-0.25))


def mark_injections(fig: go.Figure, injections: list[tuple[float, float | None]], label: str,
                    now: float | None = None) -> go.Figure:
    """Shade each long prompt from its arrival to its first token (or to now, while it runs)."""
    for start, first in injections:
        end = first if first is not None else (now if now is not None else start)
        fig.add_vrect(x0=start, x1=max(end, start + 0.05), fillcolor=INJECTION_COLOR, line_width=0,
                      annotation_text=label, annotation_position="top left")
    return fig


def itl_timeline(tokens: pd.DataFrame, injections, title: str, lang: str, now: float | None = None) -> go.Figure:
    """Every gap between two tokens of a short stream, over time, one colour per user."""
    fig = go.Figure()
    shorts = tokens[(tokens["kind"] == RequestKind.SHORT) & tokens["gap_ms"].notna()]
    for user, rows in shorts.groupby("user"):
        fig.add_trace(go.Scatter(x=rows["t"], y=rows["gap_ms"], mode="markers", marker=dict(size=4),
                                 name=t(lang, "legend_user", user=user) if user >= 0 else t(lang, "legend_requests")))
    mark_injections(fig, injections, t(lang, "legend_long_prompt"), now)
    fig.update_yaxes(type="log")
    return _layout(fig, title, t(lang, "axis_time_s"), t(lang, "axis_itl_ms"))


def rolling_itl(tokens: pd.DataFrame, title: str, lang: str, window_s: float = 2.0) -> go.Figure:
    """p50 and p99 of the gaps that ended in the last `window_s` seconds."""
    gaps = tokens[(tokens["kind"] == RequestKind.SHORT) & tokens["gap_ms"].notna()].sort_values("t")
    fig = go.Figure()
    if not gaps.empty:
        series = gaps.set_index(pd.to_timedelta(gaps["t"], unit="s"))["gap_ms"]
        for q, name in ((0.5, "p50"), (0.99, "p99")):
            rolled = series.rolling(f"{window_s}s").quantile(q)
            fig.add_trace(go.Scatter(x=gaps["t"], y=rolled.values, mode="lines", name=name))
    return _layout(fig, title, t(lang, "axis_time_s"), t(lang, "axis_itl_ms"))


def ttft_chart(requests: pd.DataFrame, title: str, lang: str) -> go.Figure:
    fig = go.Figure()
    for kind, rows in requests[requests["ttft_s"].notna()].groupby("kind"):
        fig.add_trace(go.Scatter(x=rows["sent"], y=rows["ttft_s"], mode="markers", name=t(lang, f"legend_{kind}"),
                                 marker=dict(size=7 if kind == RequestKind.SHORT else 12)))
    return _layout(fig, title, t(lang, "axis_sent_s"), t(lang, "axis_ttft_s"))


def throughput_chart(tokens: pd.DataFrame, title: str, lang: str, bin_s: float = 1.0) -> go.Figure:
    fig = go.Figure()
    if not tokens.empty:
        bins = (tokens["t"] // bin_s) * bin_s
        counts = tokens.groupby(bins).size() / bin_s
        fig.add_trace(go.Bar(x=counts.index, y=counts.values, name=t(lang, "axis_output_tokens_s")))
    return _layout(fig, title, t(lang, "axis_time_s"), t(lang, "axis_output_tokens_s"))


def server_chart(samples: pd.DataFrame, title: str, lang: str) -> go.Figure:
    """Running batch, waiting queue and KV cache use per worker (the local engine's own view)."""
    fig = go.Figure()
    for worker, rows in samples.groupby("worker"):
        fig.add_trace(go.Scatter(x=rows["t"], y=rows["running"], name=t(lang, "legend_running", worker=worker),
                                 mode="lines"))
        fig.add_trace(go.Scatter(x=rows["t"], y=rows["waiting"], name=t(lang, "legend_waiting", worker=worker),
                                 mode="lines", line=dict(dash="dot")))
        fig.add_trace(go.Scatter(x=rows["t"], y=100 * rows["kv_used"], name=t(lang, "legend_kv", worker=worker),
                                 mode="lines", yaxis="y2", line=dict(dash="dash")))
    fig.update_layout(yaxis2=dict(overlaying="y", side="right", range=[0, 100], title=t(lang, "axis_kv_pct")))
    return _layout(fig, title, t(lang, "axis_time_s"), t(lang, "axis_requests"))


def transfer_chart(transfers: list[dict], title: str, lang: str) -> go.Figure:
    """Each KV transfer: milliseconds (bars) and size."""
    fig = go.Figure()
    if transfers:
        frame = pd.DataFrame(transfers)
        fig.add_trace(go.Bar(x=frame["tokens"], y=1000 * frame["total_s"], name=t(lang, "legend_total_ms"),
                             hovertext=[f"{b / 1e6:.1f} MB, {g:.2f} GB/s"
                                        for b, g in zip(frame["bytes"], frame["gbps"])]))
        fig.add_trace(go.Bar(x=frame["tokens"], y=1000 * (frame["send_s"] + frame["receive_s"]),
                             name=t(lang, "legend_send_receive_ms")))
    return _layout(fig, title, t(lang, "axis_tokens_moved"), t(lang, "axis_ms"))


def compare_itl(runs: dict[str, pd.DataFrame], title: str, lang: str) -> go.Figure:
    """Several recorded runs on the same axes."""
    fig = go.Figure()
    for label, tokens in runs.items():
        shorts = tokens[(tokens["kind"] == RequestKind.SHORT) & tokens["gap_ms"].notna()]
        fig.add_trace(go.Scatter(x=shorts["t"], y=shorts["gap_ms"], mode="markers", marker=dict(size=4),
                                 name=label))
    fig.update_yaxes(type="log")
    return _layout(fig, title, t(lang, "axis_time_s"), t(lang, "axis_itl_ms"))
