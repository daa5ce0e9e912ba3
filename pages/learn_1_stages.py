import streamlit as st

from lab.i18n import num, t
from lab.lesson_experiments import measure_stages
from lab.lesson_figures import decode_steps, prefill_speed, roofline
from lab.lesson_reasoning import stages_takeaway
from lab.ui import page_frame, run_button, say, shared_engine_loop

lang = page_frame("l1_title")
st.markdown(t(lang, "l1_text"))
r = run_button(lang, 1, "stages", lambda: measure_stages(shared_engine_loop()))
if r:
    c1, c2 = st.columns(2)
    c1.plotly_chart(prefill_speed(r, t(lang, "l1_fig_prefill"), lang), key="prefill")
    c2.plotly_chart(decode_steps(r, t(lang, "l1_fig_decode"), lang), key="decode")
    st.plotly_chart(roofline(r, t(lang, "l1_fig_roofline"), lang), key="roofline")
    st.caption(t(lang, "l1_limits", peak=f"{r['peak_gflops']:.0f}", bandwidth=num(lang, r["bandwidth_gbs"], ".1f"),
                 params=f"{r['params'] / 1e6:.0f}"))
    st.subheader(t(lang, "takeaway"))
    say(lang, stages_takeaway(r))
