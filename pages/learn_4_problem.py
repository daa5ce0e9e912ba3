import streamlit as st

from lab.i18n import t
from lab.lesson_experiments import interference
from lab.lesson_view import show_interference, workload_controls
from lab.session import lesson_results

lang = st.session_state.get("lang", "en")
results = lesson_results()
st.title(t(lang, "l4_title"))
st.markdown(t(lang, "l4_text"))
users, long_tokens = workload_controls(lang)
if st.button(t(lang, "l4_button"), key="run", type="primary"):
    with st.spinner(t(lang, "running")):
        results["problem"] = interference("colocated", users, long_tokens)
        results["colocated_stall_s"] = round(results["problem"]["summary"]["longest_stall_ms"] / 1000, 2)
if "problem" in results:
    show_interference(lang, results["problem"], t(lang, "chart_itl"), "problem")
    st.success(t(lang, "l4_takeaway"))
