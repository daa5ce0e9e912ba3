import streamlit as st

from engine.cluster.transports import available_transports
from lab.i18n import human_bytes, num, t
from lab.kv_calculator import DTYPE_BYTES, LINKS, MODELS, kv_bytes, transfer_seconds
from lab.lesson_experiments import MEASURED_PROMPT_TOKENS, measure_transports
from lab.lesson_figures import link_times
from lab.ui import page_frame, run_button, show_table, translated_choice

LAB_MODEL = "SmolLM2-135M"   # the bundled model

lang = page_frame("l6_title")
st.markdown(t(lang, "l6_text"))
c1, c2, c3 = st.columns(3)
model = translated_choice(c1.selectbox, t(lang, "l6_model"), MODELS, "model", lang, index=2,
                          format_func=lambda m: t(lang, "this_lab", model=m) if m == LAB_MODEL else m)
dtype = c2.selectbox(t(lang, "l6_dtype"), list(DTYPE_BYTES), index=1, key="dtype")
tokens = c3.number_input(t(lang, "l6_tokens"), 1, 1_000_000, 4096, step=1024, key="tokens")
nbytes = kv_bytes(MODELS[model], DTYPE_BYTES[dtype], int(tokens))
st.info(t(lang, "l6_size", size=human_bytes(lang, nbytes),
          per_token=human_bytes(lang, MODELS[model].bytes_per_token(DTYPE_BYTES[dtype]))))
measured = run_button(lang, 6, "transports", measure_transports) or []
links = {t(lang, f"link_{key}"): gbps for key, gbps in LINKS.items()}
# A push's time is what was left after the prefill, not a link rate: it does not scale to other sizes.
copied = [m for m in measured if not m["during_prefill"]]
title = t(lang, "l6_links_measured" if copied else "l6_links", size=human_bytes(lang, nbytes))
st.plotly_chart(link_times(nbytes, links, copied, title, lang, LAB_MODEL), key="links")
fast, slow = max(LINKS, key=LINKS.get), min(LINKS, key=LINKS.get)
st.success(t(lang, "l6_take", size=human_bytes(lang, nbytes), fast=t(lang, f"link_{fast}"),
             slow=t(lang, f"link_{slow}"),
             fast_ms=num(lang, 1000 * transfer_seconds(nbytes, LINKS[fast]), ".1f"),
             slow_s=num(lang, transfer_seconds(nbytes, LINKS[slow]), ".1f")))
if measured:
    st.caption(t(lang, "l6_measured", tokens=MEASURED_PROMPT_TOKENS))
    show_table(lang, [{**m, "during_prefill": t(lang, "sent_during_prefill" if m["during_prefill"] else
                                                 "sent_after_prefill")} for m in measured])
    best = max(measured, key=lambda m: m["gbps"])
    after = [m for m in measured if not m["during_prefill"]]
    facts = dict(transport=best["transport"], tokens=MEASURED_PROMPT_TOKENS, size=human_bytes(lang, best["bytes"]),
                 gbps=num(lang, best["gbps"], ".2f"), ms=num(lang, best["total_ms"], ".1f"))
    if best["during_prefill"]:   # its time is only what was left after the prefill: say so
        take = t(lang, "l6_take_overlap", **facts)
        if best["writing_ms"] > 0:   # copies the prefill worker made itself (shm), timed
            take += t(lang, "l6_take_overlap_copies", writing_ms=f"{best['writing_ms']:.0f}", gbps=facts["gbps"])
        else:                        # writes on their own (NIXL): only the rest after the prefill is seen
            take += t(lang, "l6_take_overlap_rate", gbps=facts["gbps"])
        if after:
            other = min(after, key=lambda m: m["total_ms"])
            take += t(lang, "l6_take_overlap_vs", other=other["transport"], other_ms=f"{other['total_ms']:.0f}")
        st.info(take)
    else:
        st.info(t(lang, "l6_take_measured", **facts))
    for name, reason in available_transports().items():
        if reason:
            st.caption(t(lang, "l6_unavailable", transport=name, reason=reason))
