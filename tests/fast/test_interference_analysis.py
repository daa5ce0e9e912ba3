"""The interference analysis on hand-made streams: gaps before and during a long prefill, and
requests the run cancelled at its end, which have no end to measure."""
import pytest

from engine.core.client_stream import ClientStream
from engine.core.events import FinishReason
from engine.metrics import SLO
from lab.interference import RunResult, summarize_run, token_table
from lab.load_generator import RequestKind, Sent


def stream(request_id: str, sent: float, token_times: list[float], reason: FinishReason) -> ClientStream:
    s = ClientStream(request_id, sent)
    s.token_times, s.finish_reason = list(token_times), reason
    s._finished.set()
    return s


def run(*sent: Sent) -> RunResult:
    long = [s.stream for s in sent if s.kind == RequestKind.LONG][0]
    return RunResult("hand-made", 0.0, list(sent), [(long.sent, long.token_times[0])], slo=SLO(ttft=1.0, tpot=0.5))


def test_a_request_cancelled_at_the_end_of_the_run_is_not_counted_as_completed():
    done = Sent(RequestKind.SHORT, 0, stream("a", 0.0, [0.2, 0.3, 0.4], FinishReason.LENGTH))
    # Cancelled after one slow gap: it would miss the TPOT SLO, and it never finished.
    cut = Sent(RequestKind.SHORT, 1, stream("b", 0.0, [0.2, 2.2], FinishReason.ABORT))
    long = Sent(RequestKind.LONG, -1, stream("c", 5.0, [6.0], FinishReason.LENGTH))
    summary = summarize_run(run(done, cut, long))
    assert summary["short_requests"] == 1
    assert summary["slo_attainment"] == 1.0
    assert summary["goodput_rps"] == pytest.approx(1 / 0.4, abs=1e-3)   # one request over its 0.4 s
    assert cut.stream.timing.ok is False   # the stream's own timing agrees


def test_gaps_are_split_at_the_long_prompt_and_the_stall_is_the_longest_gap_during_it():
    user = Sent(RequestKind.SHORT, 0, stream("a", 0.0, [0.5, 0.6, 0.7, 3.0, 3.1], FinishReason.LENGTH))
    long = Sent(RequestKind.LONG, -1, stream("b", 0.8, [2.9], FinishReason.LENGTH))
    summary = summarize_run(run(user, long))
    assert summary["itl_before_ms"]["max"] == pytest.approx(100.0)
    assert summary["longest_stall_ms"] == pytest.approx(2300.0)
    assert summary["long_ttft_s"] == [2.1]


def test_token_table_has_one_row_per_token_with_its_gap_to_the_previous_token_of_its_request():
    a = Sent(RequestKind.SHORT, 0, stream("a", 0.0, [0.5, 0.6, 0.9], FinishReason.LENGTH))
    empty = Sent(RequestKind.SHORT, 1, stream("b", 0.2, [], FinishReason.ABORT))   # cut before any token
    long = Sent(RequestKind.LONG, -1, stream("c", 0.8, [2.9, 3.0], FinishReason.LENGTH))
    result = RunResult("hand-made", 0.25, [a, empty, long], [(0.8, 2.9)], slo=SLO(ttft=1.0, tpot=0.5))
    table = token_table(result)
    assert list(table.columns) == ["request_id", "kind", "user", "index", "t", "gap_ms"]
    assert table["request_id"].tolist() == ["a", "a", "a", "c", "c"]
    assert table["kind"].tolist() == [RequestKind.SHORT] * 3 + [RequestKind.LONG] * 2
    assert table["user"].tolist() == [0, 0, 0, -1, -1] and table["index"].tolist() == [0, 1, 2, 0, 1]
    assert table["t"].tolist() == pytest.approx([0.25, 0.35, 0.65, 2.65, 2.75])
    gaps = table["gap_ms"].tolist()
    assert gaps[0] != gaps[0] and gaps[3] != gaps[3]   # NaN: a request's first token has no gap
    assert [gaps[1], gaps[2], gaps[4]] == pytest.approx([100.0, 300.0, 100.0])
    assert token_table(RunResult("nothing", 0.0, [], [], slo=SLO(ttft=1.0, tpot=0.5))).empty
