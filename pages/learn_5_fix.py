import streamlit as st

from lab.i18n import t
from lab.lesson_experiments import interference
from lab.lesson_view import run_button, show_interference, workload_controls
from lab.session import lesson_results

lang = st.session_state.get("lang", "en")
results = lesson_results()
st.title(t(lang, "l5_title"))
st.markdown(t(lang, "l5_text"))
mode = st.radio(t(lang, "l5_mode"), ["disaggregated", "chunked"], key="mode", horizontal=True,
                format_func=lambda m: t(lang, f"mode_{m}"))
users, long_tokens = workload_controls(lang)
run_button(lang, 5, f"fix_{mode}", lambda: interference(mode, users, long_tokens))
runs = [(m, results[f"fix_{m}"]) for m in ("disaggregated", "chunked") if f"fix_{m}" in results]
if runs:
    columns = st.columns(2)
    with columns[0]:
        if "problem" in results:
            st.subheader(t(lang, "mode_colocated"))
            show_interference(lang, results["problem"], t(lang, "chart_itl"), "colocated")
        else:
            st.info(t(lang, "l5_need_page4"))
    with columns[1]:
        for m, result in runs:
            st.subheader(t(lang, f"mode_{m}"))
            show_interference(lang, result, t(lang, "chart_itl"), m)
    st.success(t(lang, "l5_takeaway"))
