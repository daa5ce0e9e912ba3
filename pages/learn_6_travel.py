import streamlit as st

from lab.i18n import t
from lab.kv_calculator import DTYPE_BYTES, LINKS, MODELS, human_bytes, kv_bytes
from lab.lesson_experiments import measure_transports
from lab.lesson_figures import link_times
from lab.ui import page_frame, run_button, show_table

lang = page_frame("l6_title")
st.markdown(t(lang, "l6_text"))
c1, c2, c3 = st.columns(3)
model = c1.selectbox(t(lang, "l6_model"), list(MODELS), index=2, key="model")
dtype = c2.selectbox(t(lang, "l6_dtype"), list(DTYPE_BYTES), index=1, key="dtype")
tokens = c3.number_input(t(lang, "l6_tokens"), 1, 1_000_000, 4096, step=1024, key="tokens")
nbytes = kv_bytes(MODELS[model], DTYPE_BYTES[dtype], int(tokens))
st.info(t(lang, "l6_size", size=human_bytes(nbytes),
          per_token=human_bytes(MODELS[model].bytes_per_token(DTYPE_BYTES[dtype]))))
measured = run_button(lang, 6, "transports", measure_transports) or []
st.plotly_chart(link_times(nbytes, LINKS, measured, t(lang, "l6_links"), lang), key="links")
if measured:
    st.caption(t(lang, "l6_measured", tokens=1500))
    show_table(lang, measured)
st.success(t(lang, "l6_takeaway"))
