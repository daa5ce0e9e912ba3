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
