import streamlit as st

from lab.i18n import t
from lab.lesson_experiments import measure_metrics
from lab.lesson_figures import metric_marks
from lab.ui import page_frame, run_button, shared_engine_loop

lang = page_frame("l2_title")
st.markdown(t(lang, "l2_text"))
r = run_button(lang, 2, "metrics", lambda: measure_metrics(shared_engine_loop()))
if r:
    st.plotly_chart(metric_marks(r, t(lang, "l2_fig"), lang), key="marks")
    c1, c2, c3 = st.columns(3)
    ms = t(lang, "unit_ms")
    c1.metric("TTFT p50", f"{1000 * r['ttft_p50_s']:.0f} {ms}")
    c2.metric("ITL p50 / p99", f"{r['itl_p50_ms']:.0f} / {r['itl_p99_ms']:.0f} {ms}")
    c3.metric("TPOT p50", f"{r['tpot_ms']:.0f} {ms}")
    st.success(t(lang, "l2_takeaway"))
