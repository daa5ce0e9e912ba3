import streamlit as st

from engine.cluster.topology import Mode
from lab.i18n import t
from lab.lesson_experiments import interference
from lab.lesson_reasoning import fix_prediction, fix_takeaway, spread_note
from lab.ui import (earlier_runs, lesson_results, page_frame, run_button, runs_table, say, show_run, show_ttft_split,
                    translated_choice, workload_controls)

FIXES = [Mode.DISAGGREGATED, Mode.CHUNKED]   # the two answers to page 4's problem

lang = page_frame("l5_title")
results = lesson_results()
st.markdown(t(lang, "l5_text"))
mode = translated_choice(st.radio, t(lang, "l5_mode"), FIXES, "fix_mode", lang, horizontal=True,
                         format_func=lambda m: t(lang, f"mode_{m}"))
users, long_tokens = workload_controls(lang)
colocated = results.get("problem")
if colocated is None:
    st.info(t(lang, "l5_need_page4"))
st.subheader(t(lang, "prediction"))
say(lang, [fix_prediction(mode, colocated, results.get("stages"), long_tokens)[0]])
fixed = run_button(lang, 5, f"fix_{mode}", lambda: interference(mode, users, long_tokens))
if fixed:
    st.subheader(t(lang, "measured_result"))
    runs = ([(t(lang, "mode_colocated"), colocated)] if colocated else []) + [(t(lang, f"mode_{mode}"), fixed)]
    _, predicted = fix_prediction(mode, colocated, results.get("stages"), fixed["long_tokens"])
    runs_table(lang, runs, predicted or None)
    show_ttft_split(lang, runs, "split")
    for name, run in runs:   # one under the other: each chart keeps the page's width and its whole title
        st.markdown(f"**{name}**")
        show_run(lang, run, name)
    if colocated:
        st.subheader(t(lang, "takeaway"))
        say(lang, fix_takeaway(mode, fixed, colocated))
    say(lang, [note for note in [spread_note(earlier_runs(f"fix_{mode}"))] if note])
