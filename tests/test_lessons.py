"""The guided pages and the quiz: every page renders in both languages, every experiment button
runs on the real bundled model, and the quiz grades and explains."""
import json
from pathlib import Path

import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from engine.cluster.transports import working_transports
from lab.i18n import t
from tests.labels import foreign_words, visible_texts

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PAGES = ["learn_1_stages", "learn_2_metrics", "learn_3_chat", "learn_4_problem", "learn_5_fix", "learn_6_travel",
         "learn_7_lifetime", "learn_8_summary", "quiz", "planner"]


def page(name: str, lang: str = "en") -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    at.session_state["lang"] = lang
    at.switch_page(f"pages/{name}.py")
    return at


@pytest.mark.parametrize("lang", ["en", "ru"])
@pytest.mark.parametrize("name", PAGES)
def test_every_page_renders_in_both_languages(name, lang):
    at = page(name, lang)
    at.run()
    assert not at.exception
    assert at.title, "every page has a title"


def test_every_experiment_runs_on_the_real_engine_and_feeds_the_summary_and_quiz():
    at = page("learn_1_stages")
    at.run()
    at.button(key="run").click().run()
    assert not at.exception and len(at.get("plotly_chart")) == 3
    stages = at.session_state["lesson_results"]["stages"]
    assert [r["tokens"] for r in stages["prefill"]] == [128, 512, 1024, 2048]
    assert all(r["tok_s"] > 0 for r in stages["prefill"]) and stages["peak_gflops"] > 0

    for name, widgets in [("learn_2_metrics", {}), ("learn_3_chat", {}), ("learn_4_problem", {"users": 4}),
                          ("learn_5_fix", {"users": 4}), ("learn_6_travel", {}), ("learn_7_lifetime", {})]:
        at.switch_page(f"pages/{name}.py")
        at.run()
        for key, value in widgets.items():
            at.slider(key=key).set_value(value)
        if name in ("learn_4_problem", "learn_5_fix"):
            at.slider(key="long_tokens").set_value(1000)
        at.button(key="run").click().run()
        assert not at.exception, (name, at.exception)
        if name == "learn_4_problem":   # page 1's prefill speed gives the prediction
            rate = f"{min(stages['prefill'], key=lambda r: abs(r['tokens'] - 1000))['tok_s']:.0f} tokens/s"
            assert rate in at.info[0].value
        if name == "learn_5_fix":   # compared with page 4 in a table; both long prompts' TTFT split
            assert at.table and len(at.get("plotly_chart")) == 5   # the split + each run's ITL and timeline
        assert at.success, f"{name} shows its takeaway after the experiment"

    results = at.session_state["lesson_results"]
    assert results["colocated_stall_s"] > 0
    problem, fixed = results["problem"], results["fix_disaggregated"]
    for run in (problem, fixed):
        split, = run["ttft_split"]
        parts = split["queue_s"] + split["prefill_s"] + split["transfer_s"] + split["first_token_s"]
        assert parts == pytest.approx(run["summary"]["long_ttft_s"][0], abs=0.02)
    # The timeline: colocated, one long prefill bar on the only worker, as long as the stall it caused;
    # disaggregated, the long prefill on the prefill worker, its KV sent and imported, the decode lane stepping on.
    long_bars = [b for b in problem["timeline"] if b["long"]]
    assert [b["kind"] for b in long_bars] == ["prefill"]
    assert long_bars[0]["seconds"] <= problem["summary"]["longest_stall_ms"] / 1000 + 0.05
    long_bars = {b["kind"]: b for b in fixed["timeline"] if b["long"]}
    assert set(long_bars) == {"prefill", "kv_send", "kv_import"} and long_bars["prefill"]["lane"] == "prefill-0"
    decode_steps = [b for b in fixed["timeline"] if b["lane"] == "decode-0"]
    assert decode_steps and max(b["seconds"] for b in decode_steps) < long_bars["prefill"]["seconds"] / 3
    assert [w["role"] for w in fixed["workers"]] == ["prefill", "decode"]
    assert {m["transport"] for m in results["transports"]} == set(working_transports())
    # shm and nixl write the KV during the prefill (layer by layer); the others send after it.
    assert {m["transport"]: m["during_prefill"] for m in results["transports"]} == {
        name: name in ("shm", "nixl") for name in working_transports()}
    cold, warm, other, expired = results["lifetime"]
    assert [r["tier"] for r in results["lifetime"]] == ["recompute", "memory", "disk", "disk"]
    assert cold["cached_tokens"] == 0
    assert warm["cached_tokens"] == other["cached_tokens"] == expired["cached_tokens"] > 0

    # In Russian, every page, charts and tables of these real runs included, shows no English label.
    at.session_state["lang"] = "ru"
    for name in PAGES:
        at.switch_page(f"pages/{name}.py")
        at.run()
        assert not at.exception and foreign_words(visible_texts(at)) == set(), name
    at.session_state["lang"] = "en"

    at.switch_page("pages/learn_8_summary.py")
    at.run()
    assert not at.exception and len(at.dataframe[0].value) == 7
    at.switch_page("pages/quiz.py")
    at.run()
    assert f"{results['colocated_stall_s']} s" in " ".join(m.value for m in at.markdown)


def test_quiz_gives_feedback_and_score_and_can_be_retried():
    at = page("quiz")
    at.run()
    at.radio(key="q-when-needed-en").set_value("services").run()
    at.button(key="check-when-needed").click().run()
    assert at.success[0].value == "Correct."
    at.session_state["lang"] = "ru"   # the checked answer stays chosen in the other language
    at.run()
    assert at.radio(key="q-when-needed-ru").value == "services"
    at.session_state["lang"] = "en"
    at.run()
    at.radio(key="q-compute-bound-en").set_value("decode").run()
    at.button(key="check-compute-bound").click().run()
    assert at.error[0].value == "Not quite."
    assert at.metric[0].label == "Score: 1 of 23"
    at.button(key="retry").click().run()
    assert at.metric[0].label == "Score: 0 of 23"


def test_planner_page_plans_and_recommends():
    at = page("planner")
    at.run()
    at.button(key="plan").click().run()
    assert not at.exception
    assert at.success[0].value.startswith("Best for 3 GPUs")
    assert len(at.get("plotly_chart")) == 4     # goodput, attainment, and the calibration's two
    assert "Predictions within 25%: " in at.caption[0].value
    assert at.dataframe[0].value["TTFT P90 (s)"].max() <= 0.4   # every placement's percentiles at its goodput
    at.button(key="pareto").click().run()
    assert not at.exception and len(at.get("plotly_chart")) == 5
    assert at.info[0].value.startswith("Most output per GPU:")
    at.button(key="sweep").click().run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 6
    assert at.info[1].value.startswith(("Between", "No crossover in this range"))
    at.selectbox(key="plan_gpu").set_value("L40S")
    at.selectbox(key="plan_model").set_value("Llama-3.1-70B")
    at.button(key="plan").click().run()
    assert "more than the 96 GiB of 2x L40S" in at.error[0].value   # 3 GPUs: TP2 at most


def _moved(transport: str, writing_ms: float, total_ms: float, during: bool) -> dict:
    nbytes = 69_120_000
    untimed = during and not writing_ms > 0   # measure_transports leaves an untimed push's rate unknown
    moving = float("nan") if untimed else writing_ms + total_ms
    return {"transport": transport, "bytes": nbytes, "copies": 1 if during else 4, "during_prefill": during,
            "writing_ms": float("nan") if untimed else writing_ms, "send_ms": 0.0 if during else total_ms / 2,
            "total_ms": total_ms, "moving_ms": moving, "gbps": nbytes / (moving / 1000) / 1e9}


@pytest.mark.parametrize("measured,says,not_says", [
    # shm's push: its own copies, timed inside the prefill, are what it cost
    ([_moved("shm", 7.0, 0.004, True), _moved("disk", 0.0, 1119.0, False)],
     ["under 1 ms was left", "the writes took 7.0 ms inside the prefill (9.87 GB/s)", "disk, took 1119 ms"],
     ["effective", "0.0 ms"]),
    # NIXL's push: writes on their own, only the rest after the prefill is seen: not ranked from it
    ([_moved("nixl", 0.0, 4.0, True), _moved("tcp", 0.0, 1887.0, False)],
     ["(4.0 ms) was seen", "Fastest measured here: tcp", "1887.0 ms"], ["17.28", "writes took"]),
    # no push at all
    ([_moved("disk", 0.0, 1119.0, False)], ["1119"], ["left after the prefill"]),
])
def test_page6_says_what_the_fastest_measured_transport_did(measured, says, not_says):
    at = page("learn_6_travel")
    at.session_state["lesson_results"] = {"transports": measured}
    at.run()
    text = " ".join(box.value for box in at.info)
    assert not at.exception and all(s in text for s in says) and not any(s in text for s in not_says), text


def test_russian_pages_write_numbers_with_a_decimal_comma():
    at = page("learn_6_travel", "ru")
    at.session_state["lesson_results"] = {"transports": [_moved("shm", 7.0, 0.004, True),
                                                         _moved("disk", 0.0, 1119.0, False)]}
    at.run()
    text = " ".join(box.value for box in at.info)
    assert not at.exception and "(9,87 ГБ/с)" in text and "9.87" not in text, text
    table = at.dataframe[0]   # numbers underneath (a column sorts by value), shown with commas
    shown = pa.ipc.open_stream(table.proto.arrow_data.styler.display_values).read_all().to_pandas()
    assert shown[t("ru", "col_gbps")].tolist() == ["9,87", "0,06"] and table.value[t("ru", "col_gbps")].dtype == float
    charts = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    assert charts and all(c["layout"]["separators"] == ",\u00a0" for c in charts)   # axes and hover boxes too
    assert all(c["layout"]["yaxis"]["exponentformat"] == "none" for c in charts)   # 10 000, not 10k
