"""The nixl transport, with real NIXL agents: two workers driven in-process hand a prompt over, either
pushed (the prefill worker writes each layer into blocks the decode worker reserved, as soon as the
layer is computed) or pulled (the decode worker reads the prefill worker's blocks into its own).
Every fault (bad descriptors, a dead agent, a transfer that is abandoned, a reader or writer that
never comes) fails only its request, with a clear error, and frees the blocks on both sides."""
import multiprocessing
import queue
import time
from dataclasses import replace

import pytest
import torch

from engine.cluster.messages import (Abort, AddRequest, ImportKV, KVReady, Release, Reserve, Reserved,
                                     TransferDone)
from engine.cluster.placement import WorkerSpec
from engine.cluster.topology import Role
from engine.cluster.transports import TransportSettings, available_transports, nixl
from engine.cluster.worker import Worker
from engine.core.config import EngineConfig, SamplingParams
from engine.core.kv_cache import PagedKVCache
from tests.conftest import Collected

pytestmark = pytest.mark.skipif(available_transports()["nixl"] is not None, reason="NIXL cannot load here")


@pytest.fixture
def pair():
    """A prefill and a decode worker over nixl, in this process (each its own NIXL agent)."""
    prefill, decode = (Worker(WorkerSpec(f"{role}-0", role, EngineConfig(kv_cache_tokens=1024),
                                         TransportSettings("nixl")), queue.Queue(), Collected())
                       for role in (Role.PREFILL, Role.DECODE))
    yield prefill, decode
    for worker in (prefill, decode):
        worker.transport.close()


PROMPT = "Tell me about the sea and the wind."
PARAMS = SamplingParams(max_tokens=8, ignore_eos=True)


def prefill_step(prefill: Worker, chat, target=None, params: SamplingParams = PARAMS, *then) -> None:
    """Send the prompt for a hand-off (pushed into `target`, if given, else pulled), then the messages
    `then`, and run one step."""
    for message in (AddRequest("req-1", chat(PROMPT), params, 0.0, prefill_only=True, push_target=target), *then):
        prefill.inbox.put(message)
    prefill.step()


def prefilled(prefill: Worker, chat, target=None) -> KVReady:
    prefill_step(prefill, chat, target)
    return next(m for m in prefill.outbox.messages if isinstance(m, KVReady))


def until(condition, worker: Worker, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        worker.step()
    assert condition()


def test_pulled_the_decode_worker_reads_the_prompts_blocks_into_its_own_and_the_sender_frees_them(pair, chat):
    prefill, decode = pair
    ready = prefilled(prefill, chat)
    held = ready.hand_off.handle.blocks
    assert prefill.engine.cache.allocator.num_used == len(held) > 0   # kept for the reader, not copied out
    decode.inbox.put(ImportKV(ready.hand_off))
    until(lambda: any(isinstance(m, TransferDone) for m in decode.outbox.messages), decode)
    seq = decode.engine.sequences["req-1"]
    n = ready.hand_off.num_kv_tokens
    want = prefill.engine.cache.export(list(held), n)
    got = decode.engine.cache.export(seq.block_table, n)
    assert torch.equal(want.key, got.key) and torch.equal(want.value, got.value)   # every byte, K and V
    until(lambda: prefill.engine.cache.allocator.num_used == 0, prefill)   # NIXL's notification freed them
    until(lambda: decode.engine.sequences.get("req-1") is None, decode)
    tokens = [e.token_id for e in decode.outbox.events() if e.token_id is not None]
    assert len(tokens) == 8 and tokens[0] == ready.hand_off.output_ids[0]
    assert decode.engine.cache.allocator.num_used == 0


def failed(decode: Worker) -> list[str]:
    return [e.error for e in decode.outbox.events() if e.finish_reason == "error"]


@pytest.mark.parametrize("spoil,message", [
    (lambda h: replace(h, blocks=(10 ** 6,) * len(h.blocks)), "could not start"),   # outside the registered pool
    (lambda h: replace(h, pool=replace(h.pool, token_bytes=h.pool.token_bytes * 2)), "differ in layout"),
])
def test_bad_descriptors_fail_the_request_clearly_and_both_sides_free_their_blocks(pair, chat, spoil, message):
    prefill, decode = pair
    ready = prefilled(prefill, chat)
    decode.inbox.put(ImportKV(replace(ready.hand_off, handle=spoil(ready.hand_off.handle))))
    until(lambda: failed(decode), decode)
    assert "KV transfer failed" in failed(decode)[0] and message in failed(decode)[0]
    assert decode.engine.cache.allocator.num_used == 0 and decode.idle
    until(lambda: prefill.engine.cache.allocator.num_used == 0, prefill)   # told at once, by notification


def test_an_abort_during_the_read_frees_both_sides(pair, chat):
    prefill, decode = pair
    ready = prefilled(prefill, chat)
    decode.inbox.put(ImportKV(ready.hand_off))
    decode.inbox.put(Abort("req-1"))
    until(lambda: any(e.finish_reason == "abort" for e in decode.outbox.events()), decode)
    assert decode.engine.cache.allocator.num_used == 0
    until(lambda: prefill.engine.cache.allocator.num_used == 0, prefill)


def test_blocks_no_reader_claims_are_freed_after_the_hold_timeout(pair, chat, monkeypatch):
    monkeypatch.setattr(nixl, "HOLD_TIMEOUT_S", 0.3)
    prefill, _ = pair
    prefilled(prefill, chat)
    assert prefill.engine.cache.allocator.num_used > 0
    time.sleep(0.4)
    until(lambda: prefill.engine.cache.allocator.num_used == 0, prefill)
    assert not prefill.transport.held


def _sender_that_exits(handles) -> None:
    """A prefill side that sends, then dies before anyone reads."""
    cache = PagedKVCache(30, 3, 64, num_blocks=8, block_size=16, dtype=torch.float32, device=torch.device("cpu"))
    transport = nixl.NixlTransport()
    transport.attach(cache)
    table = cache.allocator.allocate(2)
    handles.put(transport.send(cache, table, 20).handle)


def test_a_dead_sender_fails_the_read_clearly_and_the_decode_worker_goes_on(pair, chat, monkeypatch):
    monkeypatch.setattr(nixl, "READ_TIMEOUT_S", 3.0)
    prefill, decode = pair
    ctx = multiprocessing.get_context("spawn")
    handles = ctx.Queue()
    sender = ctx.Process(target=_sender_that_exits, args=(handles,))
    sender.start()
    handle = handles.get(timeout=60)
    sender.join(30)
    ready = prefilled(prefill, chat)
    decode.inbox.put(ImportKV(replace(ready.hand_off, request_id="from-the-dead", handle=handle, num_kv_tokens=20)))
    until(lambda: failed(decode), decode, seconds=20)
    assert "KV transfer failed" in failed(decode)[0] and handle.pool.agent in failed(decode)[0]
    assert decode.engine.cache.allocator.num_used == 0
    decode.inbox.put(ImportKV(ready.hand_off))   # the live sender's request is served as usual
    until(lambda: any(isinstance(m, TransferDone) for m in decode.outbox.messages), decode)


# ---- push: blocks reserved before the prefill, written layer by layer ----

def reserve(decode: Worker, chat) -> Reserved:
    decode.inbox.put(Reserve("req-1", chat(PROMPT), PARAMS, 0.0))
    decode.step()
    return next(m for m in decode.outbox.messages if isinstance(m, Reserved))


def reference_kv(chat):
    """The same prompt's KV computed by a plain engine, to compare the pushed bytes with."""
    from engine.core.llm_engine import LLMEngine
    engine = LLMEngine(EngineConfig(kv_cache_tokens=1024))
    engine.add_request(chat(PROMPT), PARAMS, "ref")
    engine.step()
    seq = engine.sequences["ref"]
    return engine.cache.export(seq.block_table, seq.num_computed)


def test_pushed_each_layer_is_written_into_the_reserved_blocks_as_soon_as_it_is_computed(pair, chat, monkeypatch):
    prefill, decode = pair
    reserved = reserve(decode, chat)
    reserved_blocks = list(reserved.target.blocks)
    assert decode.engine.cache.allocator.num_used == len(reserved_blocks) > 0
    posted = []   # the layers of every write, in the order they were posted
    post = prefill.transport._post
    monkeypatch.setattr(prefill.transport, "_post", lambda push, layers, *a: (posted.append(list(layers)),
                                                                              post(push, layers, *a)))
    ready = prefilled(prefill, chat, reserved.target)
    layers = prefill.engine.cache.key.shape[0]
    assert posted == [[layer] for layer in range(layers)]   # one write per layer, during the step
    assert type(ready.hand_off.handle).__name__ == "PushedHandle"
    until(lambda: prefill.engine.cache.allocator.num_used == 0, prefill)   # freed when the writes ended
    decode.inbox.put(ImportKV(ready.hand_off))
    until(lambda: any(isinstance(m, TransferDone) for m in decode.outbox.messages), decode)
    done = next(m for m in decode.outbox.messages if isinstance(m, TransferDone))
    assert done.finished_at >= ready.hand_off.send_started   # "ready" came after the prompt was sealed
    n = ready.hand_off.num_kv_tokens
    got = decode.engine.cache.export(reserved_blocks, n)
    want = reference_kv(chat)
    assert torch.equal(want.key, got.key) and torch.equal(want.value, got.value)   # every byte, K and V
    until(lambda: decode.engine.sequences.get("req-1") is None, decode)
    tokens = [e.token_id for e in decode.outbox.events() if e.token_id is not None]
    assert len(tokens) == 8 and tokens[0] == ready.hand_off.output_ids[0]
    assert decode.engine.cache.allocator.num_used == 0


def test_a_prompt_the_prefill_worker_refuses_frees_its_reservation_at_once(pair, chat):
    prefill, decode = pair
    reserved = reserve(decode, chat)
    prefill_step(prefill, chat, reserved.target, SamplingParams(max_tokens=2000))
    assert failed(prefill) and not prefill.transport.outgoing
    decode.inbox.put(Release("req-1", written=True))
    until(lambda: decode.engine.cache.allocator.num_used == 0, decode, seconds=2)   # told "stop", no timeout


def test_an_abort_while_pushing_frees_the_reservation_once_the_writer_stops(pair, chat):
    prefill, decode = pair
    reserved = reserve(decode, chat)
    prefill_step(prefill, chat, reserved.target, PARAMS, Abort("req-1"))
    assert any(e.finish_reason == "abort" for e in prefill.outbox.events())
    decode.inbox.put(Release("req-1", written=True))
    until(lambda: decode.engine.cache.allocator.num_used == 0, decode)   # the writer said "stop"
    assert prefill.engine.cache.allocator.num_used == 0 and not prefill.transport.outgoing


def test_a_bad_target_fails_the_request_clearly_and_both_sides_free_their_blocks(pair, chat):
    prefill, decode = pair
    reserved = reserve(decode, chat)
    bad = replace(reserved.target, blocks=(10 ** 6,) * len(reserved.target.blocks))   # outside the registered pool
    prefill_step(prefill, chat, bad)
    errors = failed(prefill)
    assert errors and "KV transfer failed" in errors[0] and "NIXL write" in errors[0]
    assert not any(isinstance(m, KVReady) for m in prefill.outbox.messages)
    until(lambda: prefill.engine.cache.allocator.num_used == 0 and not prefill.transport.outgoing, prefill)
    decode.inbox.put(Release("req-1", written=True))
    until(lambda: decode.engine.cache.allocator.num_used == 0, decode)


def test_a_reservation_whose_writer_never_speaks_is_freed_after_the_writer_timeout(pair, chat, monkeypatch):
    monkeypatch.setattr(nixl, "WRITER_TIMEOUT_S", 0.3)
    _, decode = pair
    reserve(decode, chat)
    decode.inbox.put(Release("req-1", written=True))   # told to the prefill worker, which then died
    decode.step()
    assert decode.engine.cache.allocator.num_used > 0   # a writer might still write: not yet
    time.sleep(0.4)
    until(lambda: decode.engine.cache.allocator.num_used == 0, decode)


def test_a_reservation_no_writer_knew_of_is_freed_at_once(pair, chat):
    _, decode = pair
    reserve(decode, chat)
    decode.inbox.put(Release("req-1", written=False))
    decode.step()
    assert decode.engine.cache.allocator.num_used == 0 and not decode.engine.sequences


def test_with_no_room_the_decode_worker_reserves_nothing_and_says_so(chat):
    prefill, decode = (Worker(WorkerSpec(f"{role}-0", role, EngineConfig(kv_cache_tokens=tokens),
                                         TransportSettings("nixl")), queue.Queue(), Collected())
                       for role, tokens in ((Role.PREFILL, 1024), (Role.DECODE, 16)))
    try:
        decode.inbox.put(Reserve("req-1", chat(PROMPT), PARAMS, 0.0))
        decode.step()
        answer = next(m for m in decode.outbox.messages if isinstance(m, Reserved))
        assert answer.target is None and not decode.reserved and decode.engine.cache.allocator.num_used == 0
    finally:
        for worker in (prefill, decode):
            worker.transport.close()


def test_a_request_that_ends_with_its_first_token_frees_its_reservation(pair, chat):
    prefill, decode = pair
    reserved = reserve(decode, chat)
    prefill_step(prefill, chat, reserved.target, SamplingParams(max_tokens=1))
    assert any(e.finish_reason == "length" for e in prefill.outbox.events())   # answered whole, no hand-off
    assert not any(isinstance(m, KVReady) for m in prefill.outbox.messages)
    until(lambda: not prefill.transport.outgoing and prefill.engine.cache.allocator.num_used == 0, prefill)
    decode.inbox.put(Release("req-1", written=True))   # as the router sends when the request ends
    until(lambda: decode.engine.cache.allocator.num_used == 0, decode, seconds=2)   # "stop" came, no timeout
