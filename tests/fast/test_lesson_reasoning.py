"""The guided pages' conclusions follow the numbers: each branch is picked by the measurement, and a
sentence quotes the measured values it rests on."""
import math

import pytest

from engine.cluster.topology import Mode
from lab.i18n import t
from lab.lesson_reasoning import (Tone, fix_prediction, fix_takeaway, machine_note, problem_takeaway, spread_note,
                                  stages_takeaway, stall_prediction)


def stages(decode_ms=(50.0, 55.0, 60.0, 70.0, 80.0), prefill_tok_s=(300.0, 400.0, 420.0, 400.0)):
    return {"decode": [{"batch": b, "step_ms": ms, "gflops": 0.3 * b} for b, ms in zip((1, 2, 4, 8, 16), decode_ms)],
            "prefill": [{"tokens": n, "tok_s": r, "gflops": 100.0}
                        for n, r in zip((128, 512, 1024, 2048), prefill_tok_s)],
            "peak_gflops": 200.0}


def run(stall_ms=5000.0, itl_before=80.0, prefill_s=4.9, transfer_s=0.0, ttft_s=5.0, cores=((0, 1),),
        roles=("colocated",), tput_before=90.0, tput=40.0, busy=False):
    return {"summary": {"itl_before_ms": {"p50": itl_before}, "itl_during_ms": {"p50": stall_ms / 2},
                        "longest_stall_ms": stall_ms, "long_ttft_s": [ttft_s], "output_tok_per_s": tput,
                        "output_tok_per_s_before": tput_before},
            "ttft_split": [{"queue_s": 0.05, "prefill_s": prefill_s, "transfer_s": transfer_s,
                            "first_token_s": ttft_s - 0.05 - prefill_s - transfer_s, "ttft_s": ttft_s}],
            "workers": [{"name": f"w{i}", "role": r, "device": "cpu", "cores": list(c)}
                        for i, (r, c) in enumerate(zip(roles, cores))],
            "users": 8, "long_tokens": 2000, "inject_after_tokens": 8,
            "machine": {"cores": 2, "other_cores": 0.6 if busy else 0.0, "busy": busy}}


def keys(said):
    return [s.key for s in said]


def shown(said) -> dict[str, str]:
    """A sentence's values as an English text shows them."""
    return {k: str(v) for k, v in said.values.items()}


@pytest.mark.parametrize("decode_ms,expected", [((50, 52, 55, 60, 70), "l1_take_flat"),
                                                ((50, 60, 70, 90, 120), "l1_take_fixed_cost"),
                                                ((50, 100, 200, 400, 750), "l1_take_linear")])
def test_page1_explains_the_decode_curve_it_sits_under(decode_ms, expected):
    said = stages_takeaway(stages(decode_ms=decode_ms))
    assert keys(said) == [expected, "l1_take_prefill"]
    ratio = decode_ms[-1] / decode_ms[0]
    assert shown(said[0])["ratio"] == f"{ratio:.1f}" and shown(said[0])["msn"] == f"{decode_ms[-1]:.0f}"
    assert (said[0].tone == Tone.WARNING) == (expected == "l1_take_linear")
    text = t("en", said[0].key, **said[0].values)
    assert f"{ratio:.1f}x" in text


def test_page4_predicts_the_stall_from_page1s_prefill_speed_and_compares():
    prediction, seconds = stall_prediction(stages(), 2000, 8)
    assert prediction.key == "l4_predict" and seconds == pytest.approx(2000 / 400.0)   # the 2048-token rate
    assert stall_prediction(None, 2000, 8)[1] is None
    close = problem_takeaway(run(prefill_s=5.2), seconds)
    assert keys(close) == ["l4_take_stall", "l4_take_predicted"]
    assert shown(close[0])["x"] == f"{5000 / 80:.0f}"
    assert keys(problem_takeaway(run(prefill_s=8.0), seconds))[1] == "l4_take_slower_than_predicted"
    assert keys(problem_takeaway(run(prefill_s=3.0), seconds))[1] == "l4_take_faster_than_predicted"


def test_page4_says_when_there_is_no_clear_stall_or_no_before():
    assert keys(problem_takeaway(run(stall_ms=200.0), None)) == ["l4_take_no_stall"]
    assert keys(problem_takeaway(run(itl_before=math.nan), None)) == ["l4_no_before"]


def test_page5_predictions_come_from_page4s_run():
    colocated = run()
    said, predicted = fix_prediction(Mode.CHUNKED, colocated, None, 2000)
    assert said.key == "l5_predict_chunked" and said.values["chunks"] == 8
    assert predicted["stall_s"] == pytest.approx(256 / (2000 / 4.9) + 0.08)
    said, predicted = fix_prediction(Mode.DISAGGREGATED, colocated, None, 2000)
    assert said.key == "l5_predict_disaggregated" and predicted["ttft_s"] >= 4.9
    assert fix_prediction(Mode.DISAGGREGATED, None, None, 2000)[0].key == "l5_predict_disaggregated_unknown"


def test_page5_blames_the_decode_workers_share_of_cores_and_the_prefill_cores_when_the_numbers_say_so():
    colocated = run()
    fixed = run(stall_ms=200.0, itl_before=118.0, prefill_s=8.8, transfer_s=0.6, ttft_s=9.5,
                cores=((0,), (1,)), roles=("prefill", "decode"), tput_before=70.0, tput=46.0)
    said = fix_takeaway(Mode.DISAGGREGATED, fixed, colocated)
    assert keys(said) == ["l5_take_stall", "l5_take_itl_slower_decode_cores", "l5_take_ttft_prefill_cores",
                          "l5_take_before_lower_disaggregated", "l5_take_whole_same"]
    assert shown(said[0]) == {"colocated": "5.00", "fixed": "0.20", "x": "25"}
    assert shown(said[1])["cores"] == "1" and said[1].values["all_cores"] == 2
    assert "5,00 с" in t("ru", said[0].key, **said[0].values)   # the same value, written the Russian way
    for item in said:   # every sentence renders in both languages with its measured values
        assert t("en", item.key, **item.values) and t("ru", item.key, **item.values)


def test_page5_other_branches():
    colocated = run()
    slow_link = run(stall_ms=200.0, prefill_s=5.0, transfer_s=3.0, ttft_s=8.1, cores=((0,), (1,)),
                    roles=("prefill", "decode"))
    said = keys(fix_takeaway(Mode.DISAGGREGATED, slow_link, colocated))
    assert "l5_take_ttft_transfer" in said and said[-2] == "l5_take_before_same_disaggregated"
    one_core = run(stall_ms=200.0, cores=((0,), (1,)), roles=("prefill", "decode"), tput_before=60.0)
    assert keys(fix_takeaway(Mode.DISAGGREGATED, one_core, colocated))[-2] == "l5_take_before_lower_disaggregated"
    chunked = run(stall_ms=4000.0, prefill_s=7.0, ttft_s=7.1, tput_before=130.0)
    said = keys(fix_takeaway(Mode.CHUNKED, chunked, colocated))
    assert said[0] == "l5_take_stall_same" and "l5_take_ttft_chunks" in said
    assert said[-2] == "l5_take_before_higher_chunked"


def test_page5_says_when_itl_before_fell():
    said = keys(fix_takeaway(Mode.CHUNKED, run(stall_ms=700.0, itl_before=60.0), run(itl_before=100.0)))
    assert said[1] == "l5_take_itl_faster"
    said = keys(fix_takeaway(Mode.CHUNKED, run(stall_ms=700.0, itl_before=95.0), run(itl_before=100.0)))
    assert said[1] == "l5_take_itl_same"


def test_a_busy_machine_is_named_next_to_the_result():
    assert machine_note(run()) is None
    note = machine_note(run(busy=True))
    assert note.tone == Tone.WARNING and shown(note) == {"other": "0.60", "cores": "2"}


def test_run_to_run_spread_is_shown_once_an_experiment_ran_twice():
    assert spread_note([run()]) is None
    note = spread_note([run(itl_before=80.0), run(itl_before=120.0)])
    assert note.tone == Tone.WARNING and shown(note) == {"runs": "2", "low": "80", "high": "120", "pct": "50"}
    assert spread_note([run(itl_before=80.0), run(itl_before=84.0)]).tone == Tone.NOTE


def test_page5_warns_when_the_workload_differs_from_page4s():
    colocated, fixed = run(), run(stall_ms=200.0)
    assert "l5_not_same_workload" not in keys(fix_takeaway(Mode.CHUNKED, fixed, colocated))
    fixed["long_tokens"] = 4000
    said = fix_takeaway(Mode.CHUNKED, fixed, colocated)
    assert said[0].key == "l5_not_same_workload" and said[0].tone == Tone.WARNING


# ---- page 7: where the KV cache lives ----

def tier_rows(other_ms: float, expired_tier: str = "disk") -> list[dict]:
    return [{"request": "cold", "prompt_tokens": 200, "cached_tokens": 0, "tier": "recompute", "ttft_ms": 1000.0},
            {"request": "warm", "prompt_tokens": 205, "cached_tokens": 192, "tier": "memory", "ttft_ms": 100.0},
            {"request": "other_worker", "prompt_tokens": 205, "cached_tokens": 192, "tier": "disk",
             "ttft_ms": other_ms},
            {"request": "expired", "prompt_tokens": 204, "cached_tokens": 192 if expired_tier == "disk" else 0,
             "tier": expired_tier, "ttft_ms": 150.0 if expired_tier == "disk" else 990.0}]


def test_page_7_says_whether_the_disk_read_kept_the_models_promise():
    from lab.lesson_reasoning import tier_speedups, tiers_takeaway
    fast = tier_speedups(tier_rows(125.0))
    assert fast["other_worker"]["measured"] == 8.0 and round(fast["other_worker"]["model"], 2) == round(205 / 13, 2)
    assert tiers_takeaway(tier_rows(125.0), None)[0].key == "l7_take_disk_close"     # 8x of a model's 15.8x
    assert tiers_takeaway(tier_rows(400.0), None)[0].key == "l7_take_disk_costly"    # 2.5x of 15.8x
    assert [s.key for s in tiers_takeaway(tier_rows(125.0, "recompute"), None)][1] == "l7_take_expired_recompute"
    assert tiers_takeaway(tier_rows(125.0), None)[1].key == "l7_take_expired_disk"


def test_page_7_explains_what_the_learners_guess_missed():
    from lab.lesson_reasoning import tiers_takeaway
    assert tiers_takeaway(tier_rows(125.0), 8.5)[-1].key == "l7_guess_close"
    assert tiers_takeaway(tier_rows(125.0), 2.0)[-1].key == "l7_guess_low"
    assert tiers_takeaway(tier_rows(125.0), 40.0)[-1].key == "l7_guess_high"
    rows = tier_rows(125.0)
    rows[2]["tier"] = "recompute"
    assert [s.key for s in tiers_takeaway(rows, 3.0)] == ["l7_take_no_disk_hit"]


def test_page_7_counts_the_hours_of_traffic_each_tier_holds():
    from lab.lesson_reasoning import traffic_hours
    said = traffic_hours(bytes_per_token=320_000, tokens_per_hour=5e7, host_gb=512, disk_tb=30)
    assert said.values["gb_per_hour"] == 16_000                           # 320 KB x 50 M tokens
    assert round(said.values["host_min"], 2) == 1.92 and round(said.values["disk_h"], 2) == 1.88   # 512 GB, 30 TB


# ---- page 5: every sentence agrees with its numbers, in either mode and any ordering ----

TAKEAWAY_MODES = (Mode.DISAGGREGATED, Mode.CHUNKED)
ORDERINGS = {"higher": 1.5, "same": 1.0, "lower": 0.6}   # the fixed run's figure against the colocated one's


def _fixed_run(mode, tput_before, tput, stall_ms=200.0, transfer_s=0.0, prefill_s=6.0, ttft_s=6.1, queue_s=0.05):
    split = dict(cores=((0,), (1,)), roles=("prefill", "decode")) if mode == Mode.DISAGGREGATED else {}
    fixed = run(stall_ms=stall_ms, tput_before=tput_before, tput=tput, transfer_s=transfer_s, prefill_s=prefill_s,
                ttft_s=ttft_s, **split)
    fixed["ttft_split"][0]["queue_s"] = queue_s
    fixed["ttft_split"][0]["first_token_s"] = ttft_s - queue_s - prefill_s - transfer_s
    return fixed


def _ordering_words(text: str) -> set[str]:
    """Which way an English sentence says the fixed run went."""
    found = set()
    if any(w in text for w in (", higher", "more here")):
        found.add("higher")
    if "about the same" in text:
        found.add("same")
    if any(w in text for w in (", lower", "fewer here")):
        found.add("lower")
    return found


@pytest.mark.parametrize("mode", TAKEAWAY_MODES)
@pytest.mark.parametrize("before", ORDERINGS)
@pytest.mark.parametrize("whole", ORDERINGS)
@pytest.mark.parametrize("stall_ms", (200.0, 4500.0))
def test_page5_throughput_sentences_say_the_way_their_numbers_went(mode, before, whole, stall_ms):
    colocated = run(tput_before=90.0, tput=60.0)
    fixed = _fixed_run(mode, 90.0 * ORDERINGS[before], 60.0 * ORDERINGS[whole], stall_ms=stall_ms)
    said = fix_takeaway(mode, fixed, colocated)
    texts = {s.key: t("en", s.key, **s.values) for s in said}
    before_text = next(v for k, v in texts.items() if k.startswith("l5_take_before_"))
    whole_text = next(v for k, v in texts.items() if k.startswith("l5_take_whole_"))
    assert _ordering_words(before_text) == {before}, before_text
    assert _ordering_words(whole_text) == {whole}, whole_text
    assert f"{60.0 * ORDERINGS[whole]:.1f}" in whole_text and f"{90.0 * ORDERINGS[before]:.1f}" in before_text
    stall_shorter = 5000.0 / stall_ms >= 2
    if "sat out" in whole_text:     # a cause named only where the stall was shorter
        assert stall_shorter
    if "not clearly shorter" in whole_text:
        assert not stall_shorter
    everything = " ".join(texts.values())
    if mode == Mode.CHUNKED:
        assert "transfer" not in everything and "Disaggregation" not in everything and "decode worker" not in everything
    assert "not throughput" not in everything or whole != "higher"
    for item in said:   # both languages render every sentence with its values
        assert t("ru", item.key, **item.values)


@pytest.mark.parametrize("mode", TAKEAWAY_MODES)
@pytest.mark.parametrize("transfer_s", (0.0, 0.0004, 0.3))
@pytest.mark.parametrize("ttft", ({"prefill_s": 8.0, "ttft_s": 8.1}, {"prefill_s": 4.9, "ttft_s": 5.0},
                                  {"prefill_s": 3.0, "ttft_s": 3.1}, {"prefill_s": 4.9, "ttft_s": 8.0,
                                                                      "queue_s": 3.0}))
def test_page5_ttft_sentence_names_no_empty_piece_and_no_transfer_in_chunked_mode(mode, transfer_s, ttft):
    if mode == Mode.CHUNKED:
        transfer_s = 0.0    # a chunked run has no transfer; the split shows 0
    ttft = {**ttft, "ttft_s": ttft["ttft_s"] + transfer_s}
    colocated = run()
    fixed = _fixed_run(mode, 90.0, 60.0, transfer_s=transfer_s, **ttft)
    said = [s for s in fix_takeaway(mode, fixed, colocated) if s.key.startswith("l5_take_ttft")]
    assert len(said) == 1
    for lang in ("en", "ru"):
        text = t(lang, said[0].key, **said[0].values)
        assert "0.00 s" not in text and "0,00 с" not in text, text
    text = t("en", said[0].key, **said[0].values)
    if mode == Mode.CHUNKED:
        assert "transfer" not in text, text
    rise = ttft["ttft_s"] - 5.0
    if abs(rise) <= 0.15 * 5.0:
        assert "about the same" in text
    elif rise > 0:
        assert "rose" in text
        main = max(("queue_s", "prefill_s", "transfer_s"), key=lambda p: fixed["ttft_split"][0][p] -
                   colocated["ttft_split"][0][p])
        assert {"queue_s": "queue", "prefill_s": "prefill", "transfer_s": "transfer"}[main] in text.split("mostly")[-1]
    else:
        assert "fell" in text
