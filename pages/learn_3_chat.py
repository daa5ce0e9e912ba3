import streamlit as st

from lab.figures import engine_timeline
from lab.i18n import human_bytes, num, t
from lab.lesson_experiments import chat_timeline
from lab.lesson_figures import request_timeline
from lab.ui import page_frame, run_button, shared_engine_loop

lang = page_frame("l3_title")
st.markdown(t(lang, "l3_text"))
question = st.text_input(t(lang, "l3_question"), "What is a KV cache?", key="question")
r = run_button(lang, 3, "chat", lambda: chat_timeline(shared_engine_loop(), question))
if r:
    st.plotly_chart(request_timeline(r, t(lang, "l3_fig"), lang), key="timeline")
    st.plotly_chart(engine_timeline(r["timeline"], t(lang, "fig_timeline"), lang), key="engine_timeline")
    st.text(r["text"])   # plain text: a model's Markdown (links, images) is not rendered
    st.info(t(lang, "l3_kv", tokens=r["prompt_tokens"] + r["output_tokens"],
              per_token=num(lang, r["kv_bytes_per_token"], ","), total=human_bytes(lang, r["kv_bytes"])))
    c1, c2, c3 = st.columns(3)
    ms = t(lang, "unit_ms")
    c1.metric("TTFT", f"{1000 * (r['first_token'] - r['sent']):.0f} {ms}")
    c2.metric(t(lang, "phase_prefill"), f"{1000 * r['prefill_s']:.0f} {ms}")
    c3.metric(t(lang, "tokens"), r["output_tokens"])
    st.success(t(lang, "l3_takeaway"))
