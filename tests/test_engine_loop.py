"""The threaded engine loop: concurrent streams, monotonic timestamps, aborts free their KV."""
import threading
import time

import pytest

from engine.core.config import RequestError, SamplingParams
from engine.core.engine_loop import EngineLoop
from engine.metrics import summarize


@pytest.fixture
def loop(make_engine):
    loop = EngineLoop(make_engine)
    yield loop
    loop.stop()


def test_concurrent_streams_all_complete_with_monotonic_timestamps(loop, chat):
    streams = []
    lock = threading.Lock()

    def client(i):
        s = loop.submit(chat(f"Tell me a fact about the number {i}."), SamplingParams(max_tokens=12, ignore_eos=True))
        s.result()
        with lock:
            streams.append(s)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(streams) == 6
    for s in streams:
        assert s.finish_reason == "length" and len(s.token_times) == 12
        assert s.token_times == sorted(s.token_times) and s.token_times[0] > s.sent
    assert summarize([s.timing for s in streams]).completed == 6
    for r in loop.engine.finished:
        stamps = [r.arrival, r.scheduled, r.first_token, *r.token_times, r.finish]
        assert stamps == sorted(stamps)


def test_streamed_text_equals_decoded_tokens(loop, chat):
    s = loop.submit(chat("Name three rivers."), SamplingParams(max_tokens=30))
    tokens = [e.token_id for e in s if e.token_id is not None]
    assert s.text == loop.engine.decode(tokens)


def test_bad_request_raises_in_the_caller_and_others_continue(loop, chat):
    good = loop.submit(chat("Hello"), SamplingParams(max_tokens=6, ignore_eos=True))
    with pytest.raises(RequestError):
        loop.submit("", SamplingParams())
    assert len(good.result()) > 0 and good.finish_reason == "length"


def test_cancel_mid_stream_frees_kv_blocks(loop, chat):
    s = loop.submit(chat("Write a long essay about the ocean."), SamplingParams(max_tokens=500, ignore_eos=True))
    for i, event in enumerate(s):
        if i == 3:
            s.cancel()
    assert s.finish_reason == "abort" and len(s.token_times) < 500
    deadline = time.time() + 10
    while loop.engine.has_work and time.time() < deadline:
        time.sleep(0.05)
    assert loop.engine.cache.allocator.num_used == 0


def test_run_metrics_match_a_hand_computation_from_the_token_times(loop, chat):
    streams = [loop.submit(chat(q), SamplingParams(max_tokens=8, ignore_eos=True)) for q in ("One?", "Two?", "Three?")]
    for s in streams:
        s.result(timeout=120)
    summary = summarize([s.timing for s in streams])
    ttfts = sorted(s.token_times[0] - s.sent for s in streams)
    gaps = sorted(b - a for s in streams for a, b in zip(s.token_times, s.token_times[1:]))
    assert len(gaps) == 3 * 7
    assert summary.ttft["p50"] == pytest.approx(ttfts[1])          # median of three
    assert summary.itl["max"] == pytest.approx(gaps[-1])
    assert summary.itl["mean"] == pytest.approx(sum(gaps) / len(gaps))
    first_sent = min(s.sent for s in streams)
    last_token = max(s.token_times[-1] for s in streams)
    assert summary.output_throughput == pytest.approx(24 / (last_token - first_sent))


def test_the_engine_is_built_on_the_loops_own_thread(make_engine):
    # Each thread that runs PyTorch's OpenMP code keeps its own thread pool; on a small CPU two pools
    # slow every step, so the thread that steps the engine is the one that builds it.
    built_on = []
    loop = EngineLoop(lambda: (built_on.append(threading.current_thread()), make_engine())[1], name="t")
    try:
        assert loop.engine is not None
        assert built_on == [loop._thread] and built_on[0] is not threading.current_thread()
    finally:
        loop.stop()


def test_an_engine_that_cannot_be_built_fails_its_callers_clearly():
    def broken():
        raise ValueError("no such model: nowhere")
    loop = EngineLoop(broken, name="broken")
    with pytest.raises(RuntimeError, match="could not be built: no such model: nowhere"):
        loop.submit("hello")
    loop.stop(timeout=5)
    assert not loop._thread.is_alive()
