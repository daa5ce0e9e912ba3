"""The engine timeline and the TTFT split are built from the engine's own records."""
import pytest

from engine.cluster.records import TransferRecord
from engine.core.sequence import StepKind, StepRecord
from lab.engine_trace import CHUNK, DECODE, IMPORT_LANE, KV_IMPORT, KV_SEND, PREFILL, timeline_bars, ttft_split


def test_bars_follow_the_steps_and_transfers_and_mark_the_long_prompt():
    steps = [StepRecord(10.0, 0.1, StepKind.DECODE, 4, 4, "decode-0"),
             StepRecord(10.0, 3.0, StepKind.PREFILL, 2000, 1, "prefill-0", ("long",)),
             StepRecord(10.2, 0.3, StepKind.MIXED, 256, 3, "decode-0", ("short",)),
             StepRecord(99.0, 0.1, StepKind.DECODE, 4, 4, "decode-0")]     # after the window
    transfer = TransferRecord("long", "shm", "prefill-0", "decode-0", 10**6, 2000, 13.0, 0.05, 1,
                              receive_seconds=0.2, finished_at=13.4)
    bars = timeline_bars(steps, [transfer], started=9.0, ended=20.0, long_ids={"long"})
    kinds = [(b["lane"], b["kind"], b["long"]) for b in bars]
    assert kinds == [("decode-0", DECODE, False), ("prefill-0", PREFILL, True), ("decode-0", CHUNK, False),
                     ("prefill-0", KV_SEND, True), (IMPORT_LANE.format(worker="decode-0"), KV_IMPORT, True)]
    assert bars[1]["start"] == pytest.approx(1.0) and bars[1]["seconds"] == 3.0
    assert bars[4]["start"] == pytest.approx(13.2 - 9.0)


def test_ttft_split_adds_up_to_the_ttft():
    steps = [StepRecord(1.5, 1.0, StepKind.MIXED, 256, 4, "w", ("long",)),
             StepRecord(2.6, 1.0, StepKind.MIXED, 256, 4, "w", ("long",)),
             StepRecord(3.7, 0.1, StepKind.DECODE, 4, 4, "w")]
    split = ttft_split("long", sent=1.0, first_token=3.65, steps=steps)
    assert split["queue_s"] == pytest.approx(0.5) and split["prefill_s"] == pytest.approx(2.1)
    assert split["transfer_s"] == 0 and split["prefill_steps"] == 2
    assert sum(split[k] for k in ("queue_s", "prefill_s", "transfer_s", "first_token_s")) == pytest.approx(2.65)
    transfer = TransferRecord("long", "shm", "p", "d", 1, 1, 3.6, 0.1, 1, 0.3, finished_at=4.0)
    split = ttft_split("long", 1.0, 4.1, steps, transfer)
    assert split["transfer_s"] == pytest.approx(0.4) and split["first_token_s"] == pytest.approx(0.1)
    assert ttft_split("long", 1.0, None, steps) is None and ttft_split("other", 1.0, 2.0, steps) is None
