import statistics

import streamlit as st

from engine.core.config import RequestError, SamplingParams
from lab.i18n import t
from lab.ui import page_frame, shared_engine_loop

lang = page_frame("playground")
with st.spinner(t(lang, "loading")):
    loop = shared_engine_loop()
st.caption(t(lang, "playground_intro", model=loop.engine.loaded.name, device=str(loop.engine.loaded.device)))

prompt = st.text_area(t(lang, "prompt"), t(lang, "default_prompt"), key="prompt")
col1, col2 = st.columns(2)
max_tokens = col1.slider(t(lang, "max_tokens"), 1, 256, 64, key="max_tokens")
temperature = col2.slider(t(lang, "temperature"), 0.0, 2.0, 0.0, key="temperature")

if st.button(t(lang, "generate"), key="generate", type="primary"):
    try:
        stream = loop.submit([{"role": "user", "content": prompt}],
                             SamplingParams(max_tokens=max_tokens, temperature=temperature))
    except RequestError as exc:
        st.error(t(lang, "error", error=exc))
    else:
        answer = st.empty()   # plain text: a model's Markdown (links, images) is not rendered
        for event in stream:
            if event.text:
                answer.text(stream.text)
        timing = stream.timing
        c1, c2, c3, c4 = st.columns(4)
        ms = t(lang, "unit_ms")
        c1.metric(t(lang, "ttft"), f"{1000 * timing.ttft:.0f} {ms}" if timing.ttft is not None else "-")
        c2.metric(t(lang, "itl_p50"), f"{1000 * statistics.median(timing.itls):.0f} {ms}" if timing.itls else "-")
        c3.metric(t(lang, "tokens"), timing.output_tokens)
        c4.metric(t(lang, "finish"), stream.finish_reason or "-")
