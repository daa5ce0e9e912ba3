import streamlit as st

from engine.cluster.transports import available_transports
from lab.i18n import human_bytes, num, t
from lab.kv_calculator import DTYPE_BYTES, LINKS, MODELS, kv_bytes, transfer_seconds
from lab.lesson_experiments import MEASURED_PROMPT_TOKENS, measure_transports
from lab.lesson_figures import link_times
from lab.lesson_reasoning import fastest_transport, moving_ms, transport_timed
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
# A transport whose whole move was timed scales to other sizes at its GB/s; a push whose writes ran
# untimed inside the prefill (NIXL) has only a remainder after it, no rate: it stays off the chart.
timed = [m for m in measured if transport_timed(m)]
title = t(lang, "l6_links_measured" if timed else "l6_links", size=human_bytes(lang, nbytes))
st.plotly_chart(link_times(nbytes, links, timed, title, lang, LAB_MODEL), key="links")
fast, slow = max(LINKS, key=LINKS.get), min(LINKS, key=LINKS.get)
st.success(t(lang, "l6_take", size=human_bytes(lang, nbytes), fast=t(lang, f"link_{fast}"),
             slow=t(lang, f"link_{slow}"),
             fast_ms=num(lang, 1000 * transfer_seconds(nbytes, LINKS[fast]), ".1f"),
             slow_s=num(lang, transfer_seconds(nbytes, LINKS[slow]), ".1f")))


def after_prefill(ms: float) -> str:
    """What was left after the prefill, said so that a remainder too small to print is not "0.0 ms"."""
    return t(lang, "l6_after_ms", ms=num(lang, ms, ".1f")) if ms >= 0.05 else t(lang, "l6_after_under_1ms")


if measured:
    st.caption(t(lang, "l6_measured", tokens=MEASURED_PROMPT_TOKENS))
    st.caption(t(lang, "l6_columns"))
    show_table(lang, [{**m, "during_prefill": t(lang, "sent_during_prefill" if m["during_prefill"] else
                                                 "sent_after_prefill")} for m in measured])
    best = fastest_transport(measured)   # ranked by the time the bytes were seen moving, not the remainder
    takes = []
    if best:
        facts = dict(transport=best["transport"], tokens=MEASURED_PROMPT_TOKENS,
                     size=human_bytes(lang, best["bytes"]), gbps=num(lang, best["gbps"], ".2f"),
                     ms=num(lang, moving_ms(best), ".1f"))
        if best["during_prefill"]:   # shm: its copies, timed inside the prefill, are what it cost
            take = t(lang, "l6_take_overlap", **facts, writing_ms=num(lang, best["writing_ms"], ".1f"),
                     after=after_prefill(best["total_ms"]))
            take += t(lang, "l6_take_overlap_copies")
            after = [m for m in measured if not m["during_prefill"]]
            if after:
                other = min(after, key=moving_ms)
                take += t(lang, "l6_take_overlap_vs", other=other["transport"],
                          other_ms=num(lang, moving_ms(other), ".0f"))
        else:
            take = t(lang, "l6_take_measured", **facts)
        takes.append(take)
    for m in measured:
        if not transport_timed(m):   # NIXL: its writes ran on their own inside the prefill, untimed
            takes.append(t(lang, "l6_take_untimed", transport=m["transport"], after=after_prefill(m["total_ms"])))
    st.info(" ".join(takes))
    for name, reason in available_transports().items():
        if reason:
            st.caption(t(lang, "l6_unavailable", transport=name, reason=reason))
