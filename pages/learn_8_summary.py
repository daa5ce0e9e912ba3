import pandas as pd
import streamlit as st

from lab.i18n import num, t
from lab.lesson_reasoning import fastest_transport, moving_ms
from lab.ui import lesson_results, page_frame

FIELD = ("field_vllm", "field_distserve", "field_splitwise", "field_mooncake", "field_sarathi", "field_tetri",
         "field_dynamo")

lang = page_frame("l8_title")
r = lesson_results()
ms, sec = t(lang, "unit_ms"), t(lang, "unit_s")
st.markdown(t(lang, "l8_text"))

st.subheader(t(lang, "l8_yours"))
rows = []
for run, row in (("problem", "row_stall"), ("fix_disaggregated", "row_stall_fix")):
    if run in r:
        rows.append((t(lang, row), f"{num(lang, r[run]['summary']['longest_stall_ms'] / 1000, '.2f')} {sec}"))
if "metrics" in r:
    rows.append((t(lang, "row_ttft"), f"{1000 * r['metrics']['ttft_p50_s']:.0f} {ms}"))
    rows.append((t(lang, "row_itl"), f"{r['metrics']['itl_p50_ms']:.0f} {ms}"))
if "stages" in r:
    rows.append((t(lang, "row_prefill"), f"{r['stages']['prefill'][-1]['tok_s']:.0f}"))
best = fastest_transport(r.get("transports") or [])   # by the time its bytes were seen moving, as page 6
if best:
    gbps = f"{num(lang, best['gbps'], '.2f')} {t(lang, 'unit_gbps')}"
    rows.append((t(lang, "row_transfer"), f"{best['transport']}: {gbps}, {num(lang, moving_ms(best), '.1f')} {ms}"))
if "lifetime" in r:
    cold, warm = r["lifetime"][0]["ttft_ms"], r["lifetime"][1]["ttft_ms"]
    rows.append((t(lang, "row_prefix"), f"{cold - warm:.0f} {ms} ({cold:.0f} -> {warm:.0f})"))
if rows:
    st.dataframe(pd.DataFrame(rows, columns=[t(lang, "l8_yours"), t(lang, "your_result")]), hide_index=True)
else:
    st.info(t(lang, "l8_none"))

st.subheader(t(lang, "l8_field"))
st.markdown("\n".join(f"- {t(lang, key)}" for key in FIELD))
st.success(t(lang, "l8_takeaway"))
