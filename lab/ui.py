"""Every Streamlit helper of the lab, in one module (the rest of lab/ never imports Streamlit).

Each page starts with `lang = page_frame("its_title_key")`: the page config, the language selector,
the lab's menu and the title, drawn by the page itself so that a page reached by a deep link
(/planner), which Streamlit serves from the pages/ folder without app.py, looks the same as one
reached through app.py's navigation.
"""
from __future__ import annotations

import os
from collections.abc import Callable

import pandas as pd
import streamlit as st
from streamlit.navigation.page import StreamlitPage

from engine.core.config import EngineConfig
from engine.core.engine_loop import EngineLoop
from engine.core.llm_engine import LLMEngine

from .figures import engine_timeline, itl_timeline, ttft_split_bars
from .i18n import LANGUAGES, SEPARATORS, num, t
from .lesson_reasoning import Said, Tone, machine_note
from .live_lab import LiveLab

DEFAULT_LANGUAGE = "en"
# The lab's pages in menu order: (section title key, [(page file, title key)]).
MENU = [
    ("dashboard", [("pages/dashboard.py", "dashboard"), ("pages/playground.py", "playground")]),
    ("learn", [("pages/learn_1_stages.py", "l1_title"), ("pages/learn_2_metrics.py", "l2_title"),
               ("pages/learn_3_chat.py", "l3_title"), ("pages/learn_4_problem.py", "l4_title"),
               ("pages/learn_5_fix.py", "l5_title"), ("pages/learn_6_travel.py", "l6_title"),
               ("pages/learn_7_lifetime.py", "l7_title"), ("pages/learn_8_summary.py", "l8_title"),
               ("pages/planner.py", "plan_title"), ("pages/quiz.py", "quiz")]),
]


def navigation() -> StreamlitPage:
    """app.py's navigation over MENU; hidden, since every page draws the menu itself."""
    lang = current_language()
    pages = [st.Page(file, title=t(lang, key), default=(file, key) == MENU[0][1][0])
             for _, entries in MENU for file, key in entries]
    return st.navigation(pages, position="hidden")


def page_frame(title_key: str) -> str:
    """The frame every page draws first; returns the learner's language."""
    st.set_page_config(page_title="pd-lab", layout="wide")
    lang = current_language()
    # Streamlit keeps a widget's state per page, so the choice itself lives in session_state["lang"]
    # and each page's selector starts from it; the callback stores a change before anything is drawn.
    selector = f"lang-{title_key}"
    st.sidebar.radio("Language / Язык", list(LANGUAGES), index=list(LANGUAGES).index(lang), key=selector,
                     format_func=LANGUAGES.get, horizontal=True,
                     on_change=lambda: st.session_state.update(lang=st.session_state[selector]))
    if st.query_params.get("lang") != lang:   # in the address too, so a reload or a shared link keeps it
        st.query_params["lang"] = lang
    st.sidebar.title(t(lang, "app_title"))
    for section, entries in MENU:
        st.sidebar.caption(t(lang, section))
        for file, key in entries:
            page_link(st.sidebar, file, t(lang, key), lang)
    st.title(t(lang, title_key))
    return lang


def page_link(where, file: str, label: str, lang: str, query: dict | None = None) -> None:
    """A link to one of the lab's pages that carries the language, so it opens in the learner's language
    in a new tab (a new session) too."""
    where.page_link(file, label=label, query_params={**(query or {}), "lang": lang})


def current_language() -> str:
    """The learner's language, kept across pages (app.py titles the navigation with it); a new session
    (a reload, a link) starts from the address's ?lang=."""
    if "lang" not in st.session_state:
        asked = st.query_params.get("lang")
        st.session_state["lang"] = asked if asked in LANGUAGES else DEFAULT_LANGUAGE
    return st.session_state["lang"]


# ---- objects shared across pages and sessions ---------------------------------------------------------

def shared_live_lab() -> LiveLab:
    """One live lab per server, so two tabs never start two engines."""
    return _live_lab(os.environ.get("PDLAB_RUNS", "runs"))


@st.cache_resource(show_spinner=False)
def _live_lab(runs_dir: str) -> LiveLab:
    return LiveLab(runs_dir)


@st.cache_resource(show_spinner=False)
def shared_engine_loop() -> EngineLoop:
    """One in-process engine on its own thread (which also builds it) for the playground and the guided
    pages."""
    return EngineLoop(lambda: LLMEngine(EngineConfig(), name="lab"), name="lab")


def lesson_results() -> dict:
    """What the learner measured, kept across pages for the summary and the quiz."""
    return st.session_state.setdefault("lesson_results", {})


# ---- pieces of the guided pages -----------------------------------------------------------------------

def run_button(lang: str, page: int, name: str, run: Callable[[], object]):
    """The page's run button: runs its experiment under a spinner and keeps the result as `name` among
    the learner's results (the summary and the quiz read them). The kept result, or None."""
    results = lesson_results()
    if st.button(t(lang, f"l{page}_button"), key="run", type="primary"):
        with st.spinner(t(lang, "running")):
            results[name] = run()
        earlier_runs(name).append(results[name])
    return results.get(name)


def earlier_runs(name: str, kept: int = 5) -> list:
    """This session's last runs of one experiment, newest last: how much it varies from run to run."""
    runs = st.session_state.setdefault("earlier_runs", {}).setdefault(name, [])
    del runs[:-kept]
    return runs


def say(lang: str, items: list[Said]) -> None:
    """Computed sentences, each in the box its tone calls for."""
    boxes = {Tone.FINDING: st.success, Tone.NOTE: st.info, Tone.WARNING: st.warning}
    for item in items:
        boxes[item.tone](t(lang, item.key, **item.values))


def show_run(lang: str, run: dict, key: str) -> None:
    """One interference run: its workload and cores, the streams' ITL and the engine timeline around
    the long prompt, and a warning if other programs took cores meanwhile."""
    st.caption(t(lang, "l5_workload", users=run["users"], tokens=run["long_tokens"], after=run["inject_after_tokens"]))
    st.caption(" · ".join(worker_place(lang, **w) for w in run["workers"]))
    st.plotly_chart(itl_timeline(pd.DataFrame(run["tokens"]), run["injections"], t(lang, "chart_itl"), lang),
                    key=f"itl-{key}")
    st.plotly_chart(engine_timeline(run["timeline"], t(lang, "fig_timeline"), lang, _around_long_prompt(run)),
                    key=f"timeline-{key}")
    note = machine_note(run)
    if note:
        say(lang, [note])


def worker_place(lang: str, name: str, role: str, cores, device: str) -> str:
    """Where a worker runs, in the learner's language: its CPU cores, or its GPU."""
    if cores:
        return t(lang, "worker_cores", name=name, role=t(lang, f"role_{role}"), cores=", ".join(map(str, cores)))
    return t(lang, "worker_gpu", name=name, role=t(lang, f"role_{role}"), device=device)


def _around_long_prompt(run: dict, margin_s: float = 1.5) -> tuple[float, float] | None:
    """The time window of the first long prompt, from its arrival to its first token, with a margin."""
    if not run["injections"]:
        return None
    sent, first = run["injections"][0]
    return sent - margin_s, (first if first is not None else sent) + margin_s


def runs_table(lang: str, runs: list[tuple[str, dict]], predicted: dict | None = None) -> None:
    """The runs' key figures side by side (a static table: values wrap, never cut), with a prediction
    column when one was made."""
    ms, sec = t(lang, "unit_ms"), t(lang, "unit_s")
    rows = {"row_itl_before": lambda s: _value(lang, s["itl_before_ms"]["p50"], ".0f", ms),
            "row_itl_during": lambda s: _value(lang, s["itl_during_ms"]["p50"], ".0f", ms),
            "row_longest_stall": lambda s: _value(lang, s["longest_stall_ms"] / 1000, ".2f", sec),
            "row_long_ttft": lambda s: _value(lang, s["long_ttft_s"][0] if s["long_ttft_s"] else None, ".2f", sec),
            "row_throughput_before": lambda s: _value(lang, s["output_tok_per_s_before"], ".1f"),
            "row_throughput": lambda s: _value(lang, s["output_tok_per_s"], ".1f")}
    frame = pd.DataFrame({t(lang, "col_metric"): [t(lang, key) for key in rows]} |
                         {name: [show(run["summary"]) for show in rows.values()] for name, run in runs})
    if predicted is not None:
        guess = {"row_longest_stall": predicted.get("stall_s"), "row_long_ttft": predicted.get("ttft_s")}
        frame[t(lang, "prediction")] = [f"≈ {_value(lang, guess[k], '.2f', sec)}" if guess.get(k) is not None
                                        else "" for k in rows]
    st.table(frame.set_index(t(lang, "col_metric")))


def _value(lang: str, x: float | None, spec: str, unit: str = "") -> str:
    """A measured value with its unit, or a dash where nothing was measured (never "nan")."""
    return "-" if x is None or x != x else f"{num(lang, x, spec)} {unit}".rstrip()


def show_ttft_split(lang: str, runs: list[tuple[str, dict]], key: str) -> None:
    splits = [(name, run["ttft_split"][0]) for name, run in runs if run["ttft_split"]]
    if splits:
        st.plotly_chart(ttft_split_bars(splits, t(lang, "fig_ttft_split"), lang), key=key)


def show_table(lang: str, rows: list[dict]) -> None:
    """Records as a table, the column names in the learner's language (texts: col_<name>)."""
    frame = pd.DataFrame(rows).rename(columns=lambda name: t(lang, f"col_{name}"))
    decimal, thousands = SEPARATORS[lang]
    # Two decimals (more would be noise), written the language's way; the values stay numbers, so a
    # column still sorts by value.
    st.dataframe(frame.style.format(precision=2, decimal=decimal, thousands=thousands, na_rep="-"), hide_index=True)


def translated_choice(widget: Callable, label: str, options, key: str, lang: str,
                      format_func: Callable[[object], str], index: int = 0, **kwargs):
    """A selectbox or radio (`widget`: st.selectbox, a column's radio...) whose options are labelled in
    the learner's language. The browser keeps a choice by its label: under one key, after a switch of
    language, it went on showing the old language's label as the choice ("BF16 weights and KV cache" on
    a Russian page). So the widget is keyed per language, `key`_`lang`, and the choice itself lives in
    session_state[`key`] across languages (set there, by a link say, it is what the widget starts from)."""
    options, own = list(options), f"{key}_{lang}"
    kept = st.session_state.get(key)
    if kept in options and own in st.session_state and st.session_state[own] != kept:
        del st.session_state[own]   # chosen elsewhere since this widget was drawn: start from that choice
    value = widget(label, options, index=options.index(kept) if kept in options else index, key=own,
                   format_func=format_func, on_change=lambda: st.session_state.update({key: st.session_state[own]}),
                   **kwargs)
    st.session_state[key] = value
    return value


def workload_controls(lang: str) -> tuple[int, int]:
    c1, c2 = st.columns(2)
    users = c1.slider(t(lang, "users"), 2, 12, 8, key="users")
    long_tokens = c2.slider(t(lang, "inject_tokens"), 1000, 4000, 2000, step=500, key="long_tokens")
    return users, long_tokens

