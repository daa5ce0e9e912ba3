import streamlit as st

from engine.cluster.topology import Mode
from lab.i18n import t
from lab.lesson_experiments import interference
from lab.lesson_reasoning import problem_takeaway, spread_note, stall_prediction
from lab.ui import earlier_runs, lesson_results, page_frame, run_button, runs_table, say, show_run, workload_controls

lang = page_frame("l4_title")
results = lesson_results()
st.markdown(t(lang, "l4_text"))
users, long_tokens = workload_controls(lang)
st.subheader(t(lang, "prediction"))
say(lang, [stall_prediction(results.get("stages"), long_tokens, users)[0]])
problem = run_button(lang, 4, "problem", lambda: interference(Mode.COLOCATED, users, long_tokens))
if problem:  # the quiz quotes the stall
    results["colocated_stall_s"] = round(problem["summary"]["longest_stall_ms"] / 1000, 2)
    # The prediction for the workload that ran, which the sliders may have changed since.
    _, predicted_s = stall_prediction(results.get("stages"), problem["long_tokens"], problem["users"])
    st.subheader(t(lang, "measured_result"))
    show_run(lang, problem, "problem")
    runs_table(lang, [(t(lang, "mode_colocated"), problem)],
               {"stall_s": predicted_s, "ttft_s": predicted_s} if predicted_s else None)
    st.subheader(t(lang, "takeaway"))
    say(lang, problem_takeaway(problem, predicted_s))
    say(lang, [note for note in [spread_note(earlier_runs("problem"))] if note])
