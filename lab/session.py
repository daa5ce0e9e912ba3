"""Objects the Streamlit pages share: one live lab per server, so two tabs never start two engines."""
from __future__ import annotations

import os

import streamlit as st

from .live_lab import LiveLab


def shared_live_lab() -> LiveLab:
    return _live_lab(os.environ.get("PDLAB_RUNS", "runs"))


@st.cache_resource(show_spinner=False)
def _live_lab(runs_dir: str) -> LiveLab:
    return LiveLab(runs_dir)


@st.cache_resource(show_spinner=False)
def shared_engine_loop():
    """One in-process engine on its own thread for the playground and the guided pages."""
    from .local_engine import start_local_engine
    return start_local_engine()


def lesson_results() -> dict:
    """What the learner measured, kept across pages for the summary and the quiz."""
    return st.session_state.setdefault("lesson_results", {})
