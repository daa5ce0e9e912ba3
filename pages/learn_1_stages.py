import streamlit as st

from lab.i18n import t
from lab.lesson_experiments import measure_stages
from lab.lesson_figures import decode_steps, prefill_speed, roofline
from lab.lesson_view import run_button
from lab.session import shared_engine_loop

lang = st.session_state.get("lang", "en")
st.title(t(lang, "l1_title"))
st.markdown(t(lang, "l1_text"))
r = run_button(lang, 1, "stages", lambda: measure_stages(shared_engine_loop()))
if r:
    c1, c2 = st.columns(2)
    c1.plotly_chart(prefill_speed(r, t(lang, "l1_fig_prefill")), key="prefill")
    c2.plotly_chart(decode_steps(r, t(lang, "l1_fig_decode")), key="decode")
    st.plotly_chart(roofline(r, t(lang, "l1_fig_roofline")), key="roofline")
    st.caption(f"peak {r['peak_gflops']:.0f} GFLOP/s · memory {r['bandwidth_gbs']:.1f} GB/s · "
               f"{r['params'] / 1e6:.0f}M matmul parameters")
    st.success(t(lang, "l1_takeaway"))
