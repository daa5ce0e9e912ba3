"""Streamlit pieces shared by the guided pages."""
from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import streamlit as st

from .figures import itl_timeline
from .i18n import t
from .session import lesson_results


def run_button(lang: str, page: int, name: str, run: Callable[[], object]):
    """The page's run button: runs its experiment under a spinner and keeps the result as `name` among
    the learner's results (the summary and the quiz read them). The kept result, or None."""
    results = lesson_results()
    if st.button(t(lang, f"l{page}_button"), key="run", type="primary"):
        with st.spinner(t(lang, "running")):
            results[name] = run()
    return results.get(name)


def show_interference(lang: str, result: dict, title: str, key: str) -> None:
    s = result["summary"]
    st.plotly_chart(itl_timeline(pd.DataFrame(result["tokens"]), result["injections"], title), key=key)
    c1, c2, c3 = st.columns(3)
    c1.metric("ITL p50 before / during", f"{s['itl_before_ms']['p50']:.0f} / {s['itl_during_ms']['p50']:.0f} ms")
    c2.metric("longest stall", f"{s['longest_stall_ms'] / 1000:.2f} s")
    c3.metric("long prompt TTFT", f"{s['long_ttft_s'][0]:.1f} s" if s["long_ttft_s"] else "-")


def workload_controls(lang: str) -> tuple[int, int]:
    c1, c2 = st.columns(2)
    users = c1.slider(t(lang, "users"), 2, 12, 8, key="users")
    long_tokens = c2.slider(t(lang, "inject_tokens"), 1000, 4000, 2000, step=500, key="long_tokens")
    return users, long_tokens
