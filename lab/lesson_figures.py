"""Figures of the guided pages: plain functions of the experiments' results, in the learner's language."""
from __future__ import annotations

import math

import plotly.graph_objects as go

from .figures import layout, log_range
from .i18n import human_bytes, t


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


TTFT_TARGET_MS = 1000          # the dashed line: a chat's first token within a second
ITL_GOOD_MS = (10.0, 100.0)    # the green band: tens of milliseconds between tokens


def metric_marks(result: dict, title: str, lang: str) -> go.Figure:
    """The learner's TTFTs and decode gaps as bars on a log ms axis, against the good-value marks.
    Shapes on a log axis take data values, annotations log10 ones: the marks' labels are placed by hand
    (plotly's add_hline would put "1 s" at 10^1000 ms), and the range is set from the bars and marks."""
    ttft_ms = [1000 * s for s in result["ttft_s"]]
    decode_ms = [result["itl_p50_ms"], result["itl_p99_ms"], result["tpot_ms"]]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=[f"TTFT #{i + 1}" for i in range(len(ttft_ms))], y=ttft_ms,
                         name=t(lang, "legend_ttft_ms")))
    fig.add_trace(go.Bar(x=["ITL p50", "ITL p99", "TPOT p50"], y=decode_ms, name=t(lang, "legend_decode_ms")))
    fig.add_hline(y=TTFT_TARGET_MS, line_dash="dash")
    fig.add_hrect(y0=ITL_GOOD_MS[0], y1=ITL_GOOD_MS[1], fillcolor="rgba(44,160,44,0.2)", line_width=0, layer="below")
    label = dict(showarrow=False, bgcolor="rgba(255,255,255,0.85)", yref="y")
    fig.add_annotation(text=t(lang, "mark_ttft_target"), x=1, xref="x domain", xanchor="right",
                       y=math.log10(TTFT_TARGET_MS), yanchor="bottom", **label)
    fig.add_annotation(text=t(lang, "mark_itl_range"), x=1, xref="x domain", xanchor="right",
                       y=math.log10(ITL_GOOD_MS[1]), yanchor="top", **label)
    fig.update_yaxes(type="log", dtick=1,   # 10, 100, 1000 ms: no unlabeled in-between ticks
                     range=log_range(ttft_ms + decode_ms + [TTFT_TARGET_MS, *ITL_GOOD_MS]))
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


def link_times(nbytes: int, links: dict[str, float], measured: list[dict], title: str, lang: str,
               lab_model: str = "") -> go.Figure:
    """The time to move `nbytes` over each link, two kinds of bars told apart by colour and legend: the
    links' published rates (vendors' figures, line rates, Mooncake's measurements), and the transports
    measured here on `lab_model`'s much smaller KV cache, scaled: `nbytes` at the GB/s measured."""
    published_ms = [1000 * nbytes / (bw * 1e9) for bw in links.values()]
    fig = go.Figure(go.Bar(x=published_ms, y=list(links), orientation="h", name=t(lang, "legend_links_published"),
                           showlegend=True, marker_color="#1f77b4"))
    measured_ms = [1000 * nbytes / (m["gbps"] * 1e9) for m in measured]
    if measured:   # one prompt's KV, the same size over every transport
        fig.add_trace(go.Bar(x=measured_ms, orientation="h", marker_color="#ff7f0e",
                             y=[t(lang, "bar_measured_scaled", transport=m["transport"]) for m in measured],
                             name=t(lang, "legend_links_measured", model=lab_model,
                                    size=human_bytes(lang, measured[0]["bytes"]))))
    fig.update_layout(barmode="overlay", legend=dict(orientation="h", yanchor="top", y=-0.2))
    fig.update_xaxes(type="log", range=log_range(published_ms + measured_ms))
    return layout(fig, lang, title, t(lang, "axis_ms_to_move"), "", height=420).update_layout(margin=dict(b=90))


def prefix_ttft(rows: list[dict], title: str, lang: str) -> go.Figure:
    fig = go.Figure(go.Bar(x=[t(lang, f"request_{r['request']}") for r in rows], y=[r["ttft_ms"] for r in rows],
                           text=[t(lang, "bar_cached", cached=r["cached_tokens"], prompt=r["prompt_tokens"])
                                 for r in rows]))
    return layout(fig, lang, title, "", t(lang, "legend_ttft_ms"))
