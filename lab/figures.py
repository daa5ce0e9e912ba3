"""Plotly figures for the dashboard and the guided pages: plain functions of DataFrames, labelled in
the learner's language."""
from __future__ import annotations

import math
import re
import textwrap

import pandas as pd
import plotly.graph_objects as go

from .engine_trace import BAR_KINDS, CHUNK, DECODE, KV_IMPORT, KV_SEND, PREFILL
from .i18n import SEPARATORS, num, t
from .load_generator import RequestKind

INJECTION_COLOR = "rgba(214, 39, 40, 0.15)"
# A chart's title is one line of SVG text: plotly never wraps it and cuts what does not fit. Lines of at
# most this many characters fit a chart half the page wide (a Russian title runs a third longer).
TITLE_LINE = 60
TITLE_LINE_PX = 22   # the top margin grows by one line's height per extra line


def wrap_title(title: str) -> list[str]:
    """The title's lines, broken between words into as few lines as fit, of about equal length (not a
    full line and one stray word)."""
    glued = re.sub(r"(\d) (?=\S)", "\\1\u00a0", title)   # a number stays with its unit: "0,5 с", "1.3 GB"
    wrap = lambda width: textwrap.wrap(glued, width, break_long_words=False, break_on_hyphens=False)  # noqa: E731
    lines = wrap(TITLE_LINE)
    if len(lines) < 2:
        return lines or [""]
    width = math.ceil(len(glued) / len(lines))
    while len(wrap(width)) > len(lines):
        width += 1
    return wrap(width)


def layout(fig: go.Figure, lang: str, title: str, x: str, y: str, height: int = 340) -> go.Figure:
    """One look for every chart of the lab: title (wrapped, never cut), axis names, height, margins, and
    the numbers on the axes and in the hover boxes written the language's way (10 000 in Russian, not
    plotly's 10k)."""
    lines = wrap_title(title)
    return fig.update_layout(title="<br>".join(lines), xaxis_title=x, yaxis_title=y,
                             height=height + TITLE_LINE_PX * (len(lines) - 1),
                             margin=dict(l=50, r=20, t=50 + TITLE_LINE_PX * (len(lines) - 1), b=40),
                             separators=SEPARATORS[lang], xaxis_exponentformat="none",
                             yaxis_exponentformat="none")


def log_range(values, pad: float = 1.6) -> list[float] | None:
    """An explicit range for a log axis around the positive `values`, with some room on each side, in
    the log10 units plotly takes a log axis's range (and its annotations' positions) in; None when no
    value is positive. Set explicitly, a log axis does not stretch to an annotation placed by mistake
    in data units (1000 ms read as 10^1000)."""
    positive = [v for v in values if v is not None and v == v and v > 0]
    if not positive:
        return None
    return [math.log10(min(positive) / pad), math.log10(max(positive) * pad)]


def _layout(fig: go.Figure, lang: str, title: str, x: str, y: str) -> go.Figure:
    """The dashboard's charts: shorter, with the legend below so that narrow columns keep their width."""
    return layout(fig, lang, title, x, y, 320).update_layout(legend=dict(orientation="h", y=-0.25))


def mark_injections(fig: go.Figure, injections: list[tuple[float, float | None]], label: str,
                    now: float | None = None) -> go.Figure:
    """Shade each long prompt from its arrival to its first token (or to now, while it runs)."""
    for start, first in injections:
        end = first if first is not None else (now if now is not None else start)
        fig.add_vrect(x0=start, x1=max(end, start + 0.05), fillcolor=INJECTION_COLOR, line_width=0,
                      annotation_text=label, annotation_position="top left")
    return fig


def itl_timeline(tokens: pd.DataFrame, injections, title: str, lang: str, now: float | None = None,
                 slice_s: float | None = None) -> go.Figure:
    """Every gap between two tokens of a short stream, over time, one colour per user; with `slice_s`,
    only each user's middle and longest gap in every slice of that many seconds."""
    fig = go.Figure()
    shorts = tokens[(tokens["kind"] == RequestKind.SHORT) & tokens["gap_ms"].notna()]
    if slice_s:
        shorts = middle_and_longest_gaps(shorts, slice_s)
    for user, rows in shorts.groupby("user"):
        fig.add_trace(go.Scatter(x=rows["t"], y=rows["gap_ms"], mode="markers", marker=dict(size=4),
                                 name=t(lang, "legend_user", user=user) if user >= 0 else t(lang, "legend_requests")))
    mark_injections(fig, injections, t(lang, "legend_long_prompt"), now)
    fig.update_yaxes(type="log", dtick=1)   # 1, 10, 100, 1000 ms: no unlabeled in-between ticks
    return _layout(fig, lang, title, t(lang, "axis_time_s"), t(lang, "axis_itl_ms"))


def middle_and_longest_gaps(gaps: pd.DataFrame, slice_s: float) -> pd.DataFrame:
    """Two of each user's gaps in each slice of `slice_s` seconds, both as measured: the middle one (the
    median) and the longest. A bounded number of points for a chart redrawn live (a browser's cost grows
    with the points it draws) that still shows the usual ITL and never drops a stall."""
    if gaps.empty:
        return gaps
    ordered = gaps.assign(slice=gaps["t"] // slice_s).sort_values(["user", "slice", "gap_ms"])
    groups = ordered.groupby(["user", "slice"])["gap_ms"]
    position, size = groups.cumcount(), groups.transform("size")
    kept = ordered[(position == (size - 1) // 2) | (position == size - 1)]
    return kept.drop(columns="slice").sort_values("t")


def rolling_itl(tokens: pd.DataFrame, title: str, lang: str, window_s: float = 2.0,
                every_s: float | None = None) -> go.Figure:
    """p50 and p99 of the gaps that ended in the last `window_s` seconds; with `every_s`, one point per
    that many seconds (the value at its end)."""
    gaps = tokens[(tokens["kind"] == RequestKind.SHORT) & tokens["gap_ms"].notna()].sort_values("t")
    fig = go.Figure()
    if not gaps.empty:
        series = gaps.set_index(pd.to_timedelta(gaps["t"], unit="s"))["gap_ms"]
        for q, name in ((0.5, "p50"), (0.99, "p99")):
            rolled = pd.Series(series.rolling(f"{window_s}s").quantile(q).values, index=gaps["t"].values)
            if every_s:
                rolled = rolled.groupby(rolled.index // every_s).tail(1)
            fig.add_trace(go.Scatter(x=rolled.index, y=rolled.values, mode="lines", name=name))
    return _layout(fig, lang, title, t(lang, "axis_time_s"), t(lang, "axis_itl_ms"))


def short_ttft_p50_ms(requests: pd.DataFrame) -> float:
    """The short requests' TTFT p50 (ms) over exactly the points ttft_chart draws for them (every request
    with a first token, finished or still streaming), so the figure beside the chart agrees with it; NaN
    for none."""
    ttfts = requests.loc[(requests["kind"] == RequestKind.SHORT) & requests["ttft_s"].notna(), "ttft_s"]
    return 1000 * float(ttfts.median()) if len(ttfts) else float("nan")


def ttft_chart(requests: pd.DataFrame, title: str, lang: str) -> go.Figure:
    fig = go.Figure()
    for kind, rows in requests[requests["ttft_s"].notna()].groupby("kind"):
        fig.add_trace(go.Scatter(x=rows["sent"], y=rows["ttft_s"], mode="markers", name=t(lang, f"legend_{kind}"),
                                 marker=dict(size=7 if kind == RequestKind.SHORT else 12)))
    return _layout(fig, lang, title, t(lang, "axis_sent_s"), t(lang, "axis_ttft_s"))


def throughput_chart(tokens: pd.DataFrame, title: str, lang: str, bin_s: float = 1.0) -> go.Figure:
    fig = go.Figure()
    if not tokens.empty:
        bins = (tokens["t"] // bin_s) * bin_s
        counts = tokens.groupby(bins).size() / bin_s
        fig.add_trace(go.Bar(x=counts.index, y=counts.values, name=t(lang, "axis_output_tokens_s")))
    return _layout(fig, lang, title, t(lang, "axis_time_s"), t(lang, "axis_output_tokens_s"))


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
    return _layout(fig, lang, title, t(lang, "axis_time_s"), t(lang, "axis_requests"))


def transfer_chart(transfers: list[dict], title: str, lang: str) -> go.Figure:
    """Each KV transfer as one stacked bar: the time its bytes were written while the prompt was still
    computing (a push's copies, inside the prefill) and the time left after the prefill until the KV was
    usable on the decode side. A push the engine does not time (NIXL writes on their own) says so on its
    bar instead of drawing its writes as zero."""
    fig = go.Figure()
    if transfers:
        frame = pd.DataFrame(transfers)
        writing = frame["writing_s"] if "writing_s" in frame else pd.Series(0.0, index=frame.index)
        during = frame["during_prefill"] if "during_prefill" in frame else pd.Series(False, index=frame.index)
        x = [t(lang, "transfer_label", n=i + 1, tokens=n) for i, n in enumerate(frame["tokens"])]
        hover = [t(lang, "transfer_hover", mb=b / 1e6, gbps=g) for b, g in zip(frame["bytes"], frame["gbps"])]
        untimed = [t(lang, "transfer_untimed") if d and w <= 0 else "" for d, w in zip(during, writing)]
        fig.add_trace(go.Bar(x=x, y=1000 * writing, name=t(lang, "legend_writing_ms"), hovertext=hover,
                             marker_color="#9467bd"))
        fig.add_trace(go.Bar(x=x, y=1000 * frame["total_s"], name=t(lang, "legend_after_prefill_ms"),
                             hovertext=hover, marker_color="#8c564b", text=untimed, textposition="outside"))
        fig.update_layout(barmode="stack")
    return _layout(fig, lang, title, t(lang, "axis_transfer_tokens"), t(lang, "axis_ms"))


def compare_itl(runs: dict[str, pd.DataFrame], title: str, lang: str) -> go.Figure:
    """Several recorded runs on the same axes."""
    fig = go.Figure()
    for label, tokens in runs.items():
        shorts = tokens[(tokens["kind"] == RequestKind.SHORT) & tokens["gap_ms"].notna()]
        fig.add_trace(go.Scatter(x=shorts["t"], y=shorts["gap_ms"], mode="markers", marker=dict(size=4),
                                 name=label))
    fig.update_yaxes(type="log")
    return _layout(fig, lang, title, t(lang, "axis_time_s"), t(lang, "axis_itl_ms"))


BAR_COLORS = {PREFILL: "#1f77b4", CHUNK: "#ff7f0e", DECODE: "#2ca02c", KV_SEND: "#9467bd", KV_IMPORT: "#8c564b"}
LONG_OUTLINE = "#d62728"


def engine_timeline(bars: list[dict], title: str, lang: str, window: tuple[float, float] | None = None) -> go.Figure:
    """One lane per worker, one bar per step (or KV send / import), coloured by what it did; the
    long prompt's bars are outlined in red. `window` (seconds) zooms the x axis."""
    fig = go.Figure()
    lanes = sorted({b["lane"] for b in bars}, reverse=True)
    hover = t(lang, "timeline_hover", s=t(lang, "unit_s"), ms=t(lang, "unit_ms"))
    for kind in BAR_KINDS:
        for long in (False, True):
            mine = [b for b in bars if b["kind"] == kind and b["long"] == long]
            if not mine:
                continue
            name = t(lang, f"bar_{kind}")
            fig.add_trace(go.Bar(
                y=[b["lane"] for b in mine], x=[b["seconds"] for b in mine], base=[b["start"] for b in mine],
                orientation="h", name=t(lang, "bar_long", kind=name) if long else name,
                marker=dict(color=BAR_COLORS[kind], line=dict(color=LONG_OUTLINE if long else BAR_COLORS[kind],
                                                             width=3 if long else 0.5)),
                customdata=[[b["tokens"], b["batch"], 1000 * b["seconds"]] for b in mine],
                hovertemplate=hover + f"<extra>{name}</extra>"))
    fig.update_layout(barmode="overlay", bargap=0.35)
    fig.update_yaxes(categoryorder="array", categoryarray=lanes)
    if window:
        fig.update_xaxes(range=list(window))
    # The legend goes below the axis title, in a margin of its own, so that neither covers the other.
    return layout(fig, lang, title, t(lang, "axis_time_s"), "", height=230 + 40 * len(lanes)).update_layout(
        legend=dict(orientation="h", yanchor="top", y=-0.25 - 0.3 / len(lanes)), margin=dict(b=110))


SPLIT_PARTS = ("queue_s", "prefill_s", "transfer_s", "first_token_s")
SPLIT_COLORS = ("#7f7f7f", "#1f77b4", "#9467bd", "#2ca02c")


def ttft_split_bars(runs: list[tuple[str, dict]], title: str, lang: str) -> go.Figure:
    """Each run's long-prompt TTFT as consecutive parts: queue, prefill, KV transfer, first token out."""
    fig = go.Figure()
    names, sec = [name for name, _ in runs], t(lang, "unit_s")
    for part, color in zip(SPLIT_PARTS, SPLIT_COLORS):
        values = [split[part] for _, split in runs]
        fig.add_trace(go.Bar(y=names, x=values, orientation="h", name=t(lang, f"split_{part.removesuffix('_s')}"),
                             marker_color=color,
                             text=[f"{num(lang, v, '.2f')} {sec}" if v >= 0.05 else "" for v in values],
                             textposition="inside"))
    fig.update_layout(barmode="stack")
    return layout(fig, lang, title, t(lang, "axis_ttft_s"), "", height=150 + 50 * len(runs)).update_layout(
        legend=dict(orientation="h", y=-0.4))
