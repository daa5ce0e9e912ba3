import streamlit as st

from lab.i18n import t
from lab.kv_calculator import DTYPE_BYTES, MODELS
from lab.lesson_experiments import prefix_cache_tiers
from lab.lesson_figures import prefix_ttft
from lab.lesson_reasoning import tier_speedups, tiers_takeaway, traffic_hours
from lab.ui import lesson_results, page_frame, run_button, say, show_table, shared_engine_loop

lang = page_frame("l7_title")
results = lesson_results()
st.markdown(t(lang, "l7_text"))

st.subheader(t(lang, "prediction"))
guess = st.number_input(t(lang, "l7_guess_input"), min_value=1.0, max_value=1000.0, value=None, step=1.0,
                        key="l7_guess")


def run():
    results["lifetime_guess"] = guess   # the guess committed with this run, not one typed after it
    return prefix_cache_tiers(shared_engine_loop())


rows = run_button(lang, 7, "lifetime", run)
if rows:
    st.subheader(t(lang, "measured_result"))
    st.plotly_chart(prefix_ttft(rows, t(lang, "l7_fig"), lang), key="ttft")
    fast = tier_speedups(rows)
    committed = results.get("lifetime_guess")
    table = [{"request": t(lang, f"request_{r['request']}"), "served_from": t(lang, f"tier_{r['tier']}"),
              "ttft_ms": r["ttft_ms"], "times_faster": fast[r["request"]]["measured"],
              "model_times_faster": fast[r["request"]]["model"]} for r in rows]
    if committed:   # beside the request it was about; the other rows show a dash
        for row, r in zip(table, rows):
            row["your_guess"] = committed if r["request"] == "other_worker" else float("nan")
    show_table(lang, table)
    st.subheader(t(lang, "takeaway"))
    say(lang, tiers_takeaway(rows, committed))

st.subheader(t(lang, "l7_hours_title"))
c1, c2 = st.columns(2)
model = c1.selectbox(t(lang, "l6_model"), list(MODELS), index=2, key="l7_model")
dtype = c2.selectbox(t(lang, "l6_dtype"), list(DTYPE_BYTES), index=1, key="l7_dtype")
c1, c2, c3 = st.columns(3)
tokens_per_hour = c1.number_input(t(lang, "l7_tokens_per_hour"), 1e5, 1e11, 5e7, step=1e7, format="%.0f")
host_gb = c2.number_input(t(lang, "l7_host_gb"), 1.0, 1e5, 512.0, step=64.0)
disk_tb = c3.number_input(t(lang, "l7_disk_tb"), 0.1, 1e4, 30.0, step=1.0)
say(lang, [traffic_hours(MODELS[model].bytes_per_token(DTYPE_BYTES[dtype]), tokens_per_hour, host_gb, disk_tb)])
