import streamlit as st

from lab.i18n import t
from lab.lesson_experiments import interference
from lab.lesson_view import run_button, show_interference, workload_controls
from lab.session import lesson_results

lang = st.session_state.get("lang", "en")
st.title(t(lang, "l4_title"))
st.markdown(t(lang, "l4_text"))
users, long_tokens = workload_controls(lang)
problem = run_button(lang, 4, "problem", lambda: interference("colocated", users, long_tokens))
if problem:  # the quiz quotes the stall
    lesson_results()["colocated_stall_s"] = round(problem["summary"]["longest_stall_ms"] / 1000, 2)
    show_interference(lang, problem, t(lang, "chart_itl"), "problem")
    st.success(t(lang, "l4_takeaway"))
