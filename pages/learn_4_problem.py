import streamlit as st

from engine.cluster.topology import Mode
from lab.i18n import t
from lab.lesson_experiments import interference
from lab.ui import lesson_results, page_frame, run_button, show_interference, workload_controls

lang = page_frame("l4_title")
st.markdown(t(lang, "l4_text"))
users, long_tokens = workload_controls(lang)
problem = run_button(lang, 4, "problem", lambda: interference(Mode.COLOCATED, users, long_tokens))
if problem:  # the quiz quotes the stall
    lesson_results()["colocated_stall_s"] = round(problem["summary"]["longest_stall_ms"] / 1000, 2)
    show_interference(lang, problem, t(lang, "chart_itl"), "problem")
    st.success(t(lang, "l4_takeaway"))
