import streamlit as st

from lab.i18n import t
from lab.lesson_experiments import prefix_cache_lifetime
from lab.lesson_figures import prefix_ttft
from lab.ui import page_frame, run_button, shared_engine_loop

lang = page_frame("l7_title")
st.markdown(t(lang, "l7_text"))
rows = run_button(lang, 7, "lifetime", lambda: prefix_cache_lifetime(shared_engine_loop()))
if rows:
    st.plotly_chart(prefix_ttft(rows, t(lang, "l7_fig"), lang), key="ttft")
    st.success(t(lang, "l7_takeaway"))
