import streamlit as st

from lab.i18n import t
from lab.lesson_experiments import prefix_cache_lifetime
from lab.lesson_figures import prefix_ttft
from lab.session import lesson_results, shared_engine_loop

lang = st.session_state.get("lang", "en")
results = lesson_results()
st.title(t(lang, "l7_title"))
st.markdown(t(lang, "l7_text"))
if st.button(t(lang, "l7_button"), key="run", type="primary"):
    with st.spinner(t(lang, "running")):
        results["lifetime"] = prefix_cache_lifetime(shared_engine_loop())
if "lifetime" in results:
    st.plotly_chart(prefix_ttft(results["lifetime"], t(lang, "l7_fig")), key="ttft")
    st.success(t(lang, "l7_takeaway"))
