"""A KV transfer written during the prefill is shown with its writing time, not as the sliver left
after the prefill; transports are ranked by the time their bytes were seen moving, and a push whose
writes were not timed is not ranked from its remainder (the dashboard's KV chart, pages 6 and 8)."""
import math
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lab.figures import transfer_chart
from lab.lesson_reasoning import fastest_transport, moving_ms, transport_timed

APP = str(Path(__file__).resolve().parents[2] / "app.py")
NBYTES = 69_120_000


def moved(transport: str, writing_ms: float, total_ms: float, during: bool) -> dict:
    """A page-6 row as lab.lesson_experiments.measure_transports writes it (untimed writes are NaN)."""
    untimed = during and not writing_ms > 0
    moving = math.nan if untimed else writing_ms + total_ms
    return {"transport": transport, "bytes": NBYTES, "copies": 1 if during else 4, "during_prefill": during,
            "writing_ms": math.nan if untimed else writing_ms, "send_ms": 0.0 if during else total_ms / 2,
            "total_ms": total_ms, "moving_ms": moving,
            "gbps": math.nan if untimed else NBYTES / (moving / 1000) / 1e9}


SHM, NIXL = moved("shm", 7.0, 0.0024, True), moved("nixl", 0.0, 4.0, True)
TCP, DISK = moved("tcp", 0.0, 1887.0, False), moved("disk", 0.0, 1119.0, False)


def test_transports_are_ranked_by_the_time_their_bytes_moved_not_by_the_remainder():
    assert fastest_transport([SHM, NIXL, TCP, DISK])["transport"] == "shm"    # 7 ms moving, not nixl's 4 ms left
    assert fastest_transport([NIXL, TCP, DISK])["transport"] == "disk"
    assert fastest_transport([NIXL]) is None
    assert not transport_timed(NIXL) and transport_timed(SHM) and transport_timed(TCP)
    assert moving_ms(SHM) == pytest.approx(7.0024)
    old = {k: v for k, v in SHM.items() if k != "moving_ms"}   # a row saved before moving_ms was written
    assert moving_ms(old) == pytest.approx(7.0024)
    old_nixl = {**NIXL, "writing_ms": 0.0, "gbps": 17.3}       # ... and a push's remainder as its rate
    assert fastest_transport([old_nixl, TCP])["transport"] == "tcp"


def test_the_kv_chart_draws_the_writing_inside_the_prefill_and_says_which_part_is_which():
    transfers = [{"tokens": 4003, "bytes": 9e7, "gbps": 10.0, "during_prefill": True, "writing_s": 0.009,
                  "total_s": 0.0000024, "send_s": 0.0, "receive_s": 0.0},
                 {"tokens": 4003, "bytes": 9e7, "gbps": 20.0, "during_prefill": True, "writing_s": 0.0,
                  "total_s": 0.004, "send_s": 0.0, "receive_s": 0.0},
                 {"tokens": 2000, "bytes": 4.5e7, "gbps": 1.0, "during_prefill": False, "writing_s": 0.0,
                  "total_s": 0.045, "send_s": 0.02, "receive_s": 0.02}]
    fig = transfer_chart(transfers, "", "en")
    assert fig.layout.barmode == "stack" and [trace.name for trace in fig.data] == [
        "written during the prefill (ms)", "after the prefill (ms)"]
    writing, after = fig.data
    heights = [w + a for w, a in zip(writing.y, after.y)]
    assert heights[0] == pytest.approx(9.0024) and heights[2] == pytest.approx(45.0)   # not a 0.0024 ms sliver
    assert len(set(writing.x)) == 3    # one bar per transfer: two of the same length do not add up
    assert list(after.text) == ["", "written during the prefill, untimed", ""]


def page(name: str, measured: list[dict], lang: str = "en") -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["lang"] = lang
    at.session_state["lesson_results"] = {"transports": measured}
    at.switch_page(f"pages/{name}.py")
    at.run()
    assert not at.exception
    return at


@pytest.mark.parametrize("measured,says,not_says", [
    ([SHM, NIXL, DISK], ["Fastest measured here: shm", "the writes took 7.0 ms inside the prefill (9.87 GB/s)",
                         "under 1 ms was left", "disk, took 1119 ms", "nixl wrote the KV", "(4.0 ms)"],
     ["0.0 ms", "0.00", "17.2", "Fastest measured here: nixl"]),
    ([NIXL, TCP], ["Fastest measured here: tcp", "1887.0 ms, all of it after the prefill", "nixl wrote the KV"],
     ["Fastest measured here: nixl", "17.2"]),
])
def test_page6_names_the_fastest_by_moving_time_and_does_not_print_an_empty_remainder(measured, says, not_says):
    text = " ".join(box.value for box in page("learn_6_travel", measured).info)
    assert all(s in text for s in says) and not any(s in text for s in not_says), text


def test_page8_repeats_page6s_ranking():
    at = page("learn_8_summary", [NIXL, SHM, TCP])
    cell = at.dataframe[0].value.iloc[0, 1]
    assert cell.startswith("shm: 9.87 GB/s"), cell
    at = page("learn_8_summary", [NIXL])
    assert not len(at.dataframe) or not any("nixl" in str(v) for v in at.dataframe[0].value.iloc[:, 1])
