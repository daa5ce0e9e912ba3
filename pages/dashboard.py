import streamlit as st

from engine.cluster.topology import Mode
from engine.cluster.transports import working_transports
from engine.metrics import stats
from lab.device_stats import cpu_stats, gpu_stats
from lab.figures import (compare_itl, engine_timeline, itl_timeline, rolling_itl, server_chart, short_ttft_p50_ms,
                         throughput_chart, transfer_chart, ttft_chart)
from lab.i18n import t
from lab.interference import relative_injections, request_table, token_table
from lab.live_lab import TIMELINE_WINDOW_S, LabStatus
from lab.load_generator import ChatLoad, RequestKind
from lab.target import TargetKind, TargetSpec
from lab.ui import page_frame, shared_live_lab, translated_choice, worker_place

lang = page_frame("dashboard")
lab = shared_live_lab()
st.caption(t(lang, "dashboard_intro"))

# ---- sidebar: target and load ------------------------------------------------------------------
with st.sidebar:
    st.subheader(t(lang, "target"))
    # Keyed per language: a radio whose option labels change under the same key is drawn with nothing
    # selected after the switch (Streamlit 1.67), so each language has its own, set from the last choice.
    kinds = list(TargetKind)
    kind = st.radio(t(lang, "target"), kinds, key=f"target_kind_{lang}", label_visibility="collapsed",
                    index=kinds.index(st.session_state.get("target_kind", TargetKind.LOCAL)),
                    format_func=lambda k: t(lang, f"target_{k}"))
    st.session_state["target_kind"] = kind
    if kind == TargetKind.LOCAL:
        mode = translated_choice(st.selectbox, t(lang, "mode"), Mode, "mode", lang,
                                 format_func=lambda m: t(lang, f"mode_{m}"))
        prefill_workers = decode_workers = 1
        transport, threshold, chunk = "shm", 1000, 256
        if mode == Mode.DISAGGREGATED:
            c1, c2 = st.columns(2)
            prefill_workers = c1.number_input(t(lang, "prefill_workers"), 1, 8, 1, key="prefill_workers")
            decode_workers = c2.number_input(t(lang, "decode_workers"), 1, 8, 1, key="decode_workers")
            transport = st.selectbox(t(lang, "transport"), working_transports(), key="transport")
            threshold = st.number_input(t(lang, "conditional"), 0, 8192, 1000, step=100, key="threshold")
        if mode == Mode.CHUNKED:
            chunk = st.select_slider(t(lang, "chunk_size"), [32, 64, 128, 256, 512, 1024], 256, key="chunk")
        spec = TargetSpec(TargetKind.LOCAL, mode, int(prefill_workers), int(decode_workers), 1, transport, int(chunk),
                          int(threshold) or None)
    else:
        spec = TargetSpec(TargetKind.REMOTE, url=st.text_input(t(lang, "url"), "http://127.0.0.1:8000", key="url"))
    # One under the other, the sidebar's width each: side by side, the Russian labels were cut.
    if st.button(t(lang, "start_target"), key="start_target", type="primary", width="stretch"):
        lab.start_target(spec)
    if st.button(t(lang, "stop_target"), key="stop_target", width="stretch"):
        lab.stop_target()

    st.subheader(t(lang, "load"))
    users = st.slider(t(lang, "users"), 1, 16, 6, key="users")
    output_tokens = st.slider(t(lang, "output_tokens"), 8, 256, 48, key="output_tokens")
    rate = st.number_input(t(lang, "rate"), 0.0, 20.0, 0.0, step=0.5, key="rate")
    if st.button(t(lang, "start_load"), key="start_load", disabled=lab.status != LabStatus.READY, width="stretch"):
        lab.start_load(ChatLoad(users=users, output_tokens=output_tokens, rate_rps=rate or None))
    if st.button(t(lang, "stop_load"), key="stop_load", width="stretch"):
        lab.stop_load()

# ---- inject ---------------------------------------------------------------------------------------
@st.fragment
def inject_controls():
    """A fragment: the click reruns only these controls, not the whole page, whose redraw took the
    browser ~0.75 s of CPU just as the long prompt starts its prefill (benchmarks/observer_effect.py)."""
    c1, c2, c3 = st.columns([2, 3, 1.4])  # the button's label wraps: the Russian one is longer
    inject_tokens = c1.slider(t(lang, "inject_tokens"), 1000, 8000, 4000, step=500, key="inject_tokens")
    inject_text = c2.text_area(t(lang, "inject_text"), "", height=68, key="inject_text")
    if c3.button(t(lang, "inject"), key="inject", type="primary", disabled=not lab.load_running, wrap=True):
        lab.inject(inject_tokens, inject_text.strip() or None)


inject_controls()


# ---- live view ------------------------------------------------------------------------------------------
# What the view costs is CPU taken from the engine on a small machine: a browser redrawing a Plotly
# chart spends ~0.1 s of a core on it, more the more points it holds (benchmarks/observer_effect.py).
# So the live charts show the last minute, with a bounded number of points; the main two are redrawn
# every 2 s and only when something new arrived (nothing does while a colocated engine prefills a long
# prompt), the others every 10 s. A saved run, below, keeps every gap.
rendered_state = (lab.status, lab.load_running)  # what the buttons above were drawn for
LIVE_WINDOW_S = 60.0
LIVE_SLICE_S = 0.5


def built_for(name: str, data: tuple, build) -> list:
    """The figures `build()` made for `data`, rebuilt only when `data` changed: a chart sent unchanged
    costs the browser nothing, so a chart whose data did not move is not redrawn."""
    kept = st.session_state.get(name)
    if kept is None or kept[0] != data:
        kept = st.session_state[name] = (data, build())
    return kept[1]


@st.fragment(run_every=2.0)
def live_view():
    if (lab.status, lab.load_running) != rendered_state:
        st.rerun(scope="app")  # the engine came up or the load stopped: redraw the buttons too
    if lab.status == LabStatus.STARTING:
        st.info(t(lang, "starting"))
    elif lab.status == LabStatus.FAILED:
        st.error(t(lang, "target_failed", error=lab.error))
    elif lab.status == LabStatus.IDLE:
        st.info(t(lang, "no_target"))
    if lab.notice:   # what the lab did on its own (stopped the users for a new target...), said once
        st.warning(t(lang, lab.notice[0], **lab.notice[1]))
    workers = lab.workers()
    if workers:
        st.caption(t(lang, "workers") + ": " + " · ".join(
            worker_place(lang, w.name, w.role, w.cores, f"{w.device}, {w.detail}") for w in workers))
        for w in workers:
            if not w.alive and w.last_error:
                st.warning(t(lang, "worker_down", name=w.name, error=w.last_error))
            elif w.restarts:
                st.info(t(lang, "worker_restarted", name=w.name, n=w.restarts, error=w.last_error))
    target = lab.target
    if target is not None and target.note:
        st.warning(t(lang, "one_gpu_note", note=target.note))
    result = lab.current()
    if result is None:
        if lab.status == LabStatus.READY:
            st.info(t(lang, "no_load"))
        return
    tokens, requests = token_table(result), request_table(result)
    gaps = tokens.loc[tokens["kind"] == RequestKind.SHORT, "gap_ms"].dropna().tolist()
    s = {k: (f"{v:.0f}" if v == v else "-") for k, v in stats(gaps).items()}  # NaN (no gaps yet) shows as "-"
    ttft = short_ttft_p50_ms(requests)   # the points of the TTFT chart beside it, in flight ones included
    st.markdown("**" + t(lang, "summary", p50=s["p50"], p99=s["p99"], stall=s["max"],
                         ttft=f"{ttft:.0f}" if ttft == ttft else "-", n=len(requests)) + "**")
    now = lab.view_end(result)   # once the load stopped, every chart ends where the run did
    injections = relative_injections(result)
    for sent, first in injections:
        if first is None and lab.load_running:
            st.markdown(t(lang, "prefilling", s=f"{now - sent:.0f}"))
    st.caption(t(lang, "live_charts", window=f"{LIVE_WINDOW_S:.0f}") if lab.load_running else
               t(lang, "live_charts_stopped", window=f"{LIVE_WINDOW_S:.0f}", end=f"{now:.0f}"))
    bars = lab.timeline(result, end_s=now)
    newest = (lang, result.started, len(tokens), len(requests), tuple(injections),
              max((b["start"] + b["seconds"] for b in bars), default=None), lab.load_running)

    def build():
        recent = tokens[tokens["t"].between(now - LIVE_WINDOW_S, now)]
        title = t(lang, "chart_itl_live", slice=LIVE_SLICE_S)   # a number: t() writes it 0,5 in Russian
        figures = [("itl", itl_timeline(recent, injections, title, lang, now=now,
                                        slice_s=LIVE_SLICE_S))]
        if bars:
            window = (max(0.0, now - TIMELINE_WINDOW_S), now)
            figures.append(("timeline", engine_timeline(bars, t(lang, "fig_timeline"), lang, window)))
        return figures
    for key, figure in built_for("live_figures", newest, build):
        st.plotly_chart(figure, key=key)
    st.subheader(t(lang, "live_text"))
    latest = {}
    for sent in result.requests:  # each user's newest request, for the first three users
        if sent.kind == RequestKind.SHORT:
            latest[sent.user] = sent
    recent_requests = [latest[user] for user in sorted(latest)[:3]]
    for column, sent in zip(st.columns(3), recent_requests):
        box = column.container(border=True, height=140)
        box.caption(t(lang, "live_box", user=sent.user, request=sent.stream.request_id,
                      tokens=len(sent.stream.token_times)))
        box.text(sent.stream.text[-400:] or "…")


@st.fragment(run_every=10.0)
def more_charts():
    result = lab.current()
    if result is None:
        return
    tokens, requests = token_table(result), request_table(result)
    end = lab.view_end(result)   # the same last stretch of the run as the charts above
    since = end - LIVE_WINDOW_S

    def build():
        recent = tokens[tokens["t"].between(since, end)]
        samples = lab.server_samples()
        samples = samples[samples["t"].between(since, end)]
        figures = [("rolling", rolling_itl(recent, t(lang, "chart_rolling"), lang, every_s=LIVE_SLICE_S)),
                   ("ttft", ttft_chart(requests, t(lang, "chart_ttft"), lang)),
                   ("throughput", throughput_chart(recent, t(lang, "chart_throughput"), lang))]
        if not samples.empty:
            figures.append(("server", server_chart(samples, t(lang, "chart_server"), lang)))
        if result.transfers:
            figures.append(("transfer", transfer_chart(result.transfers, t(lang, "chart_transfer"), lang)))
        return figures
    newest = (lang, result.started, len(tokens), len(requests), len(result.transfers), lab.load_running)
    figures = dict(built_for("more_figures", newest, build))
    for pair in (("rolling", "ttft"), ("throughput", "server")):
        for column, key in zip(st.columns(2), pair):
            if key in figures:
                column.plotly_chart(figures[key], key=key)
    if "transfer" in figures:
        st.plotly_chart(figures["transfer"], key="transfer")
    st.subheader(t(lang, "devices"))
    gpus = gpu_stats()
    if gpus:
        for g in gpus:
            st.progress(min(100, g["util_pct"]) / 100, text=t(
                lang, "gpu_load", gpu=g["gpu"], name=g["name"], util=g["util_pct"], used=g["memory_used_gib"],
                total=g["memory_total_gib"]))
    else:
        for i, pct in enumerate(cpu_stats()):
            st.progress(min(100.0, pct) / 100, text=f"{t(lang, 'cpu_core', i=i)}: {pct:.0f}%")


live_view()
more_charts()

# ---- record and compare --------------------------------------------------------------------------------
st.divider()
c1, c2 = st.columns([3, 1])
name = c1.text_input(t(lang, "run_name"), "", key="run_name")
if c2.button(t(lang, "record"), key="record", disabled=lab.current() is None):
    folder = lab.record(name)
    if folder:
        st.success(t(lang, "saved", folder=folder))
        # Show the new run at once, beside the last one compared.
        st.session_state["compare"] = [folder.name] + st.session_state.get("compare", [])[:1]
saved = lab.runs.names()
chosen = st.multiselect(t(lang, "compare"), saved, key="compare",   # Streamlit's own placeholder is English
                        placeholder=t(lang, "compare_choose" if saved else "compare_none"))
if chosen:
    loaded = {run: lab.runs.load(run) for run in chosen}
    runs = {loaded[r][2].get("name", r): loaded[r][0] for r in chosen}
    st.plotly_chart(compare_itl(runs, t(lang, "chart_compare"), lang), key="compare_chart")
    for run in chosen:
        tokens_df, requests_df, _ = loaded[run]
        c1, c2 = st.columns(2)
        c1.download_button(f"{t(lang, 'download_tokens')}: {run}", tokens_df.to_csv(index=False), f"{run}-tokens.csv",
                           key=f"dl-tokens-{run}")
        c2.download_button(f"{t(lang, 'download_requests')}: {run}", requests_df.to_csv(index=False),
                           f"{run}-requests.csv", key=f"dl-requests-{run}")
