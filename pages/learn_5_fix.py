import streamlit as st

from engine.cluster.topology import Mode
from lab.i18n import t
from lab.lesson_experiments import interference
from lab.ui import lesson_results, page_frame, run_button, show_interference, workload_controls

FIXES = [Mode.DISAGGREGATED, Mode.CHUNKED]   # the two answers to page 4's problem

lang = page_frame("l5_title")
results = lesson_results()
st.markdown(t(lang, "l5_text"))
mode = st.radio(t(lang, "l5_mode"), FIXES, key="mode", horizontal=True,
                format_func=lambda m: t(lang, f"mode_{m}"))
users, long_tokens = workload_controls(lang)
run_button(lang, 5, f"fix_{mode}", lambda: interference(mode, users, long_tokens))
runs = [(m, results[f"fix_{m}"]) for m in FIXES if f"fix_{m}" in results]
if runs:
    columns = st.columns(2)
    with columns[0]:
        if "problem" in results:
            st.subheader(t(lang, "mode_colocated"))
            show_interference(lang, results["problem"], t(lang, "chart_itl"), Mode.COLOCATED)
        else:
            st.info(t(lang, "l5_need_page4"))
    with columns[1]:
        for m, result in runs:
            st.subheader(t(lang, f"mode_{m}"))
            show_interference(lang, result, t(lang, "chart_itl"), m)
    st.success(t(lang, "l5_takeaway"))
