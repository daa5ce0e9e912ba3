"""The quiz's computed questions: built from the learner's numbers (or results/, saying so), each with
exactly one right option among distinct values, and the planner's scenarios with a clear winner."""
import itertools

import pytest
from streamlit.testing.v1 import AppTest

from engine.cluster.topology import Mode
from lab.quiz import decode_answers, encode_answers
from lab.quiz_measured import DISTINCT, Figures, learner_figures, measured_questions
from lab.quiz_planner import SCENARIOS, best_by_mode, planner_question, winner
from tests.test_lessons import APP


def figures(prefill=400.0, decode1=60.0, ratio=2.0, users=8, itl=100.0, kv=69_120_000, transfer=0.8,
            colocated=5.0, disaggregated=10.0) -> Figures:
    return Figures(prefill, decode1, decode1 * ratio, users, itl, 1500, kv, 300.0, colocated, disaggregated,
                   transfer, frozenset({"stages"}))


def value(option: dict) -> float:
    return float(option["en"].rsplit(" ", 1)[0].split(" tokens")[0].replace(",", ""))   # 4,800 s


def test_every_measured_question_has_exactly_one_right_option_among_distinct_values():
    grid = itertools.product((30.0, 400.0, 5000.0), (8.0, 60.0, 300.0), (1.0, 2.7, 12.0), (2, 8, 12),
                             (15.0, 400.0), (0.01, 3.0))
    for prefill, decode1, ratio, users, itl, transfer in grid:   # slow and fast machines, flat and steep batching
        if prefill <= 1000 / decode1 or itl < decode1:   # prefill is faster per token than decode; a gap >= a step
            continue
        for q in measured_questions(figures(prefill, decode1, ratio, users, itl, transfer=transfer)):
            where = (q.id, prefill, decode1, ratio, users, itl, transfer)
            assert q.correct == {"right"} and len(q.options) >= 3, (where, q.options)
            values = sorted(value(o) for o in q.options)
            assert all(b / a >= DISTINCT * 0.95 for a, b in zip(values, values[1:])), (where, values)  # rounding
            assert q.text["ru"] and q.explanation["ru"]


def test_the_right_values_follow_the_formulas():
    qs = {q.id: q for q in measured_questions(figures())}
    right = lambda qid: next(value(o) for o in qs[qid].options if o["id"] == "right")  # noqa: E731
    assert right("stall-16k") == pytest.approx(16_000 / 400, rel=0.01)
    assert right("batch-16") == pytest.approx(16 * 1000 / 120, rel=0.01)
    assert right("kv-over-rdma") == pytest.approx(1000 * 69_120_000 / 25e9, rel=0.01)
    assert right("chunk-stall") == pytest.approx(256 / 400, rel=0.02)
    assert right("own-prefill-machine") == pytest.approx(5.8, rel=0.01)
    bits = next(value(o) for o in qs["kv-over-rdma"].options if o["id"] == "bits")
    assert bits == pytest.approx(8 * right("kv-over-rdma"), rel=0.01)


def test_the_learners_numbers_are_used_and_results_fill_in_what_was_not_run():
    fallback = learner_figures({})
    assert fallback.mine == frozenset() and fallback.prefill_tok_s > 0 and fallback.kv_bytes > 0
    assert "results/" in measured_questions(fallback)[0].text["en"]
    stages = {"prefill": [{"tokens": 2048, "tok_s": 123.0}], "decode": [{"step_ms": 70.0}, {"step_ms": 99.0}]}
    mine = learner_figures({"stages": stages})
    assert mine.mine == {"stages"} and mine.prefill_tok_s == 123.0 and mine.decode_ms_16 == 99.0
    q = next(q for q in measured_questions(mine) if q.id == "batch-16")
    assert "99 ms for 16" in q.text["en"] and "Your own measurements" in q.text["en"]


def test_planner_scenarios_have_the_clear_winners_their_explanations_describe():
    expected = {"plan-short-chat": Mode.CHUNKED, "plan-long-strict": Mode.DISAGGREGATED,
                "plan-slow-link": Mode.CHUNKED}
    for scenario in SCENARIOS:
        best = best_by_mode(scenario)
        assert winner(best) == expected[scenario.id], (scenario.id, best)
        q = planner_question(scenario, best)
        assert q.correct == {str(expected[scenario.id])} and len(q.options) == 3
        assert f"{best[expected[scenario.id]][1]:.2f}" in q.explanation["en"]


def test_answers_survive_in_the_url():
    answers = {"when-needed": {"services"}, "what-improves": {"tail-itl", "separate"}}
    assert decode_answers(encode_answers(answers)) == answers
    assert decode_answers("garbage,,x:") == {}


def test_the_quiz_page_restores_answers_from_its_url_and_lists_what_to_revisit():
    at = AppTest.from_file(APP, default_timeout=300)
    at.query_params["answers"] = "when-needed:services,compute-bound:decode"
    at.switch_page("pages/quiz.py")
    at.run()
    assert not at.exception
    assert at.metric[0].label == "Score: 1 of 23"
    assert len(at.success) == 1 and len(at.error) == 1
    review = [link.proto.label for link in at.get("page_link") if "→" in link.proto.label]
    assert len(review) == 1 and review[0].startswith("2. Which stage is compute-bound")
