"""The KV hand-off as the router and the workers walk it, with the tiny model in one process: each
request goes through its named phases, gets the answer a colocated engine gives, lands its KV byte
for byte, and, however it ends (done, aborted, a worker's death), leaves no record and no block."""
import time

import pytest
import torch

from engine.cluster.imports import ImportPhase
from engine.cluster.messages import Abort, AddRequest, ImportKV, KVHandOff, KVReady, Release, Reserve
from engine.cluster.topology import Mode, Topology
from engine.cluster.transports import PushedHandle, TransportSettings, push
from engine.core.config import SamplingParams
from tests.fast.in_process import InProcessCluster
from tests.fast.tiny_model import expected_answer, expected_kv

PROMPT = list(range(3, 40))   # 37 tokens: three blocks of 16
ANSWER = expected_answer(PROMPT, 6)
PARAMS = SamplingParams(max_tokens=4, ignore_eos=True)
DISAGGREGATED = Topology(Mode.DISAGGREGATED)
ROUTES = {   # transport -> the phases a request goes through
    "shm": ["reserving", "prefilling", "transferring", "running"],
    "shm-pull": ["prefilling", "transferring", "running"],
    "disk": ["prefilling", "transferring", "running"],
    "tcp": ["prefilling", "transferring", "running"],
}


def settings(route: str) -> TransportSettings:
    return TransportSettings("shm", push=False) if route == "shm-pull" else TransportSettings(route)


@pytest.fixture
def cluster(request):
    made = []

    def make(*args, **kwargs) -> InProcessCluster:
        made.append(InProcessCluster(*args, **kwargs))
        return made[-1]
    yield make
    for c in made:
        c.close()


def assert_nothing_held(c: InProcessCluster) -> None:
    assert not c.router.live
    assert c.blocks_held() == dict.fromkeys(c.blocks_held(), 0)
    assert all(not w.imports and not w.releasing and not w.prefill_only for w in c.workers)


@pytest.mark.parametrize("route", ROUTES)
def test_a_disaggregated_request_walks_its_phases_and_gets_the_colocated_answer(cluster, route):
    colocated = cluster(Topology(Mode.COLOCATED))
    alone = colocated.submit(PROMPT)
    colocated.run(alone)
    assert alone.token_ids == ANSWER and colocated.phases["req-1"] == ["running"]

    c = cluster(DISAGGREGATED, settings(route))
    stream = c.submit(PROMPT)
    c.run(stream)
    assert stream.token_ids == ANSWER and stream.finish_reason == "length"
    assert c.phases["req-1"] == ROUTES[route]
    record = c.router.transfers["req-1"]
    assert (record.source, record.target, record.tokens) == ("prefill-0", "decode-0", len(PROMPT))
    assert record.finished_at >= record.send_started and record.during_prefill == (route == "shm")
    assert_nothing_held(c)


@pytest.mark.parametrize("route", ROUTES)
def test_the_decode_worker_holds_the_prompts_kv_byte_for_byte_when_it_streams_the_first_token(cluster, route):
    c = cluster(DISAGGREGATED, settings(route))
    decode = c.worker("decode-0")
    landed = []
    finish_import = decode.engine.finish_import

    def check(seq, output_ids, output_logprobs=()):
        landed.append(decode.engine.cache.export(seq.block_table, len(PROMPT)))
        return finish_import(seq, output_ids, output_logprobs)
    decode.engine.finish_import = check
    c.run(c.submit(PROMPT))
    want = expected_kv(PROMPT)
    assert len(landed) == 1 and torch.equal(landed[0].key, want.key) and torch.equal(landed[0].value, want.value)


def test_a_short_prompt_under_the_conditional_threshold_runs_on_the_decode_worker(cluster):
    c = cluster(DISAGGREGATED, conditional_threshold=len(PROMPT) + 1)
    stream = c.submit(PROMPT)
    assert c.router.live["req-1"].worker == "decode-0"
    c.run(stream)
    assert stream.token_ids == ANSWER and c.phases["req-1"] == ["running"] and not c.router.transfers


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("phase", ["reserving", "prefilling", "transferring", "running"])
def test_an_abort_in_any_phase_ends_the_request_and_frees_everything(cluster, route, phase):
    if phase not in ROUTES[route]:
        pytest.skip(f"{route} has no {phase} phase")
    c = cluster(DISAGGREGATED, settings(route))
    stream = c.submit(PROMPT, max_tokens=50)
    deadline = time.monotonic() + 10
    while c.router.live["req-1"].phase != phase and time.monotonic() < deadline:
        # Once prefilling, the prefill worker steps alone until its hand-off is routed, so that the
        # transfer is seen in flight.
        alone = phase == "transferring" and c.router.live["req-1"].phase == "prefilling"
        c.pump(only=["prefill-0"] if alone else None)
    assert c.router.live["req-1"].phase == phase
    stream.cancel()
    c.run(stream)
    assert stream.finish_reason == "abort"
    c.pump(5)   # the workers hear of it; a released reservation waits for its writer's last notice
    assert_nothing_held(c)


def test_a_decode_workers_death_fails_the_requests_that_hold_blocks_there_not_the_others(cluster):
    c = cluster(Topology(Mode.DISAGGREGATED, decode_workers=2))
    first, second = c.submit(PROMPT), c.submit(PROMPT)
    reserved_on = {rid: state.reserved_on for rid, state in c.router.live.items()}
    assert sorted(reserved_on.values()) == ["decode-0", "decode-1"]   # least outstanding first
    dead = reserved_on["req-1"]
    c.kill(dead)
    assert first.finish_reason == "error" and f"worker {dead} failed" in first.error
    assert not second.done
    c.run(second)
    assert second.token_ids == ANSWER


def test_a_decode_worker_with_no_room_reserves_nothing_and_the_kv_is_pulled_when_it_has_room(cluster):
    c = cluster(DISAGGREGATED, kv_cache_tokens=64)   # four blocks: one prompt of three at a time
    first, second = c.submit(PROMPT, max_tokens=12), c.submit(PROMPT, max_tokens=12)
    c.run(first, second)
    assert first.token_ids == second.token_ids == expected_answer(PROMPT, 12)
    assert c.phases["req-1"][:2] == ["reserving", "prefilling"] and c.router.transfers["req-1"].during_prefill
    assert not c.router.transfers["req-2"].during_prefill   # no room to reserve: pulled after its prefill
    assert_nothing_held(c)


def test_the_worker_keeps_one_record_per_import_and_names_its_phase(cluster):
    c = cluster(DISAGGREGATED)
    prefill, decode = c.worker("prefill-0"), c.worker("decode-0")
    decode.inbox.put(Reserve("req-9", PROMPT, PARAMS, 0.0))
    decode.step()
    target = decode.outbox.messages[-1].target
    assert decode.imports["req-9"].phase == ImportPhase.RESERVED
    prefill.inbox.put(AddRequest("req-9", PROMPT, PARAMS, 0.0, prefill_only=True, push_target=target))
    prefill.step()
    ready = next(m for m in prefill.outbox.messages if isinstance(m, KVReady))
    decode.inbox.put(ImportKV(ready.hand_off))
    decode.step()
    assert "req-9" not in decode.imports and decode.engine.has_request("req-9")   # landed and decoding
    decode.inbox.put(Reserve("req-10", PROMPT, PARAMS, 0.0))
    decode.step()
    decode.inbox.put(Release("req-10", written=True))
    decode.step()
    assert [r.phase for r in decode.releasing] == [ImportPhase.RELEASING]   # until its writer says it stopped


def test_an_abort_while_a_push_lands_frees_the_reserved_blocks_once_no_writer_can_write(cluster, monkeypatch):
    monkeypatch.setattr(push, "WRITER_TIMEOUT_S", 0.2)
    c = cluster(DISAGGREGATED)
    decode = c.worker("decode-0")
    decode.inbox.put(Reserve("req-9", PROMPT, PARAMS, 0.0))
    decode.step()
    hand_off = KVHandOff("req-9", PROMPT, [5], PARAMS, 0.0, PushedHandle("req-9", "a writer that never speaks"),
                         len(PROMPT), 0, 0.0, 0.0, written_during_prefill=True)
    decode.inbox.put(ImportKV(hand_off))
    decode.step()
    assert decode.imports["req-9"].phase == ImportPhase.LANDING   # waiting for the writer's "ready"
    decode.inbox.put(Abort("req-9"))
    decode.step()
    assert "req-9" not in decode.imports and decode.engine.kv_blocks_used > 0   # a writer might still write
    deadline = time.monotonic() + 5
    while decode.engine.kv_blocks_used and time.monotonic() < deadline:
        decode.step()
    assert decode.engine.kv_blocks_used == 0 and not decode.releasing
