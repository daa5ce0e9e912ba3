import streamlit as st

from lab.i18n import t
from lab.lesson_experiments import prefix_cache_lifetime
from lab.lesson_figures import prefix_ttft
from lab.lesson_view import run_button
from lab.session import shared_engine_loop

lang = st.session_state.get("lang", "en")
st.title(t(lang, "l7_title"))
st.markdown(t(lang, "l7_text"))
rows = run_button(lang, 7, "lifetime", lambda: prefix_cache_lifetime(shared_engine_loop()))
if rows:
    st.plotly_chart(prefix_ttft(rows, t(lang, "l7_fig")), key="ttft")
    st.success(t(lang, "l7_takeaway"))
