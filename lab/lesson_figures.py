"""Figures of the guided pages: plain functions of the experiments' results, in the learner's language."""
from __future__ import annotations

import plotly.graph_objects as go

from .figures import layout
from .i18n import t


def prefill_speed(result: dict, title: str, lang: str) -> go.Figure:
    rows = result["prefill"]
    fig = go.Figure(go.Scatter(x=[r["tokens"] for r in rows], y=[r["tok_s"] for r in rows], mode="lines+markers"))
    return layout(fig, lang, title, t(lang, "axis_prompt_tokens"), t(lang, "axis_prefill_tokens_s"))


def decode_steps(result: dict, title: str, lang: str) -> go.Figure:
    rows = result["decode"]
    fig = go.Figure(go.Scatter(x=[r["batch"] for r in rows], y=[r["step_ms"] for r in rows], mode="lines+markers"))
    return layout(fig, lang, title, t(lang, "axis_batch"), t(lang, "axis_decode_step_ms"))


def roofline(result: dict, title: str, lang: str) -> go.Figure:
    peak, bandwidth = result["peak_gflops"], result["bandwidth_gbs"]
    xs = [0.25 * 2 ** i for i in range(16)]
    fig = go.Figure(go.Scatter(x=xs, y=[min(peak, bandwidth * x) for x in xs], mode="lines",
                               name=t(lang, "legend_roofline"), line=dict(color="gray")))
    fig.add_trace(go.Scatter(x=[r["intensity"] for r in result["prefill"]], y=[r["gflops"] for r in result["prefill"]],
                             mode="markers+text", name="prefill", text=[r["tokens"] for r in result["prefill"]],
                             textposition="top center", marker=dict(size=10)))
    fig.add_trace(go.Scatter(x=[r["intensity"] for r in result["decode"]], y=[r["gflops"] for r in result["decode"]],
                             mode="markers+text", name="decode", text=[f"b{r['batch']}" for r in result["decode"]],
                             textposition="bottom center", marker=dict(size=10)))
    fig.update_xaxes(type="log", dtick=1)   # powers of ten only: minor labels would overlap
    fig.update_yaxes(type="log", dtick=1)
    return layout(fig, lang, title, t(lang, "axis_intensity"), "GFLOP/s")


def metric_marks(result: dict, title: str, lang: str) -> go.Figure:
    fig = go.Figure()
    fig.add_trace(go.Bar(x=[f"TTFT #{i + 1}" for i in range(len(result["ttft_s"]))],
                         y=[1000 * s for s in result["ttft_s"]], name=t(lang, "legend_ttft_ms")))
    fig.add_trace(go.Bar(x=["ITL p50", "ITL p99", "TPOT p50"],
                         y=[result["itl_p50_ms"], result["itl_p99_ms"], result["tpot_ms"]],
                         name=t(lang, "legend_decode_ms")))
    fig.add_hline(y=1000, line_dash="dash", annotation_text=t(lang, "mark_ttft_target"))
    fig.add_hrect(y0=10, y1=100, fillcolor="rgba(44,160,44,0.15)", line_width=0,
                  annotation_text=t(lang, "mark_itl_range"), annotation_position="top left")
    fig.update_yaxes(type="log")
    return layout(fig, lang, title, "", t(lang, "axis_ms"))


def request_timeline(result: dict, title: str, lang: str) -> go.Figure:
    t0 = result["sent"]
    fig = go.Figure()
    spans = [(t(lang, "phase_queue"), t0, result["scheduled"]),
             (t(lang, "phase_prefill"), result["scheduled"], result["first_token"])]
    for name, start, end in spans:
        fig.add_trace(go.Bar(y=[name], x=[1000 * (end - start)], base=[1000 * (start - t0)], orientation="h",
                             name=name))
    times = [1000 * (t - t0) for t in result["token_times"]]
    fig.add_trace(go.Scatter(x=times, y=[t(lang, "phase_decode")] * len(times), mode="markers",
                             name=t(lang, "legend_tokens"),
                             marker=dict(symbol="line-ns-open", size=14)))
    return layout(fig, lang, title, t(lang, "axis_ms_since_sent"), "", height=260)


def link_times(nbytes: int, links: dict[str, float], measured: list[dict], title: str, lang: str) -> go.Figure:
    names = list(links) + [t(lang, "legend_measured_here", transport=m["transport"]) for m in measured]
    seconds = [nbytes / (bw * 1e9) for bw in links.values()] + [nbytes / (m["gbps"] * 1e9) for m in measured]
    fig = go.Figure(go.Bar(x=[1000 * s for s in seconds], y=names, orientation="h"))
    fig.update_xaxes(type="log")
    return layout(fig, lang, title, t(lang, "axis_ms_to_move"), "", height=380)


def prefix_ttft(rows: list[dict], title: str, lang: str) -> go.Figure:
    fig = go.Figure(go.Bar(x=[t(lang, f"request_{r['request']}") for r in rows], y=[r["ttft_ms"] for r in rows],
                           text=[t(lang, "bar_cached", cached=r["cached_tokens"], prompt=r["prompt_tokens"])
                                 for r in rows]))
    return layout(fig, lang, title, "", t(lang, "legend_ttft_ms"))
