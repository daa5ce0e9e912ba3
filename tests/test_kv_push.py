"""The push route of the transports that have one (shm; nixl where NIXL loads): the decode worker
reserves blocks for a prompt, the prefill worker writes each layer's KV into them as soon as the layer
is computed. Two workers driven in-process. Every fault (a refused prompt, an abort mid-push, a bad
target, a writer that never speaks) fails only its request, with a clear error, and frees the blocks
on both sides, never while a writer may still write into them."""
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch

from engine.cluster.messages import Abort, AddRequest, ImportKV, KVReady, Release, Reserve, Reserved, TransferDone
from engine.cluster.transports import available_transports, push
from engine.core.config import EngineConfig, SamplingParams
from engine.core.llm_engine import LLMEngine
from tests.worker_pair import PARAMS, PROMPT, failed, prefill_step, prefilled, until, worker_pair

PUSHING = [pytest.param("shm"),
           pytest.param("nixl", marks=pytest.mark.skipif(available_transports()["nixl"] is not None,
                                                         reason="NIXL cannot load here"))]
WRITE_ERROR = {"shm": "shared-memory write", "nixl": "NIXL write"}


@pytest.fixture(params=PUSHING)
def pair(request):
    with worker_pair(request.param) as workers:
        yield workers


def reserve(decode, chat) -> Reserved:
    decode.inbox.put(Reserve("req-1", chat(PROMPT), PARAMS, 0.0))
    decode.step()
    return next(m for m in decode.outbox.messages if isinstance(m, Reserved))


def reference_kv(chat):
    """The same prompt's KV computed by a plain engine, to compare the pushed bytes with."""
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
    layers = prefill.engine.cache.num_layers
    posted = []   # the layers of every write, in the order they were made
    write = prefill.transport._write
    monkeypatch.setattr(prefill.transport, "_write", lambda p, which, *a: (posted.append(list(which)),
                                                                              write(p, which, *a)))
    ready = prefilled(prefill, chat, reserved.target)
    assert posted == [[layer] for layer in range(layers)]   # one write per layer, during the step
    assert ready.hand_off.written_during_prefill
    until(lambda: prefill.engine.cache.allocator.num_used == 0, prefill)   # freed when the writes ended
    decode.inbox.put(ImportKV(ready.hand_off))
    until(lambda: any(isinstance(m, TransferDone) for m in decode.outbox.messages), decode)
    done = next(m for m in decode.outbox.messages if isinstance(m, TransferDone))
    assert done.finished_at >= ready.hand_off.send_started   # in place after the prompt was sealed, not before
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
    prefill.inbox.put(AddRequest("req-1", chat(PROMPT), PARAMS, 0.0))   # the id is taken there
    prefill_step(prefill, chat, reserved.target)
    assert "already in use" in failed(prefill)[0] and not prefill.transport.outgoing
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
    bad = replace(reserved.target, blocks=(10 ** 6,) * len(reserved.target.blocks))   # outside the decode pool
    prefill_step(prefill, chat, bad)
    errors = failed(prefill)
    assert errors and "KV transfer failed" in errors[0] and WRITE_ERROR[prefill.transport.name] in errors[0]
    assert not any(isinstance(m, KVReady) for m in prefill.outbox.messages)
    until(lambda: prefill.engine.cache.allocator.num_used == 0 and not prefill.transport.outgoing, prefill)
    decode.inbox.put(Release("req-1", written=True))
    until(lambda: decode.engine.cache.allocator.num_used == 0, decode)


def test_a_reservation_whose_writer_never_speaks_is_freed_after_the_writer_timeout(pair, chat, monkeypatch):
    _, decode = pair
    monkeypatch.setattr(push, "WRITER_TIMEOUT_S", 0.3)
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


@pytest.mark.parametrize("transport", PUSHING)
def test_with_no_room_the_decode_worker_reserves_nothing_and_says_so(chat, transport):
    with worker_pair(transport, decode_tokens=16) as (_, decode):
        decode.inbox.put(Reserve("req-1", chat(PROMPT), PARAMS, 0.0))
        decode.step()
        answer = next(m for m in decode.outbox.messages if isinstance(m, Reserved))
        assert answer.target is None and not decode.imports and decode.engine.cache.allocator.num_used == 0


def test_a_request_that_ends_with_its_first_token_frees_its_reservation(pair, chat):
    prefill, decode = pair
    reserved = reserve(decode, chat)
    prefill_step(prefill, chat, reserved.target, SamplingParams(max_tokens=1))
    assert any(e.finish_reason == "length" for e in prefill.outbox.events())   # answered whole, no hand-off
    assert not any(isinstance(m, KVReady) for m in prefill.outbox.messages)
    until(lambda: not prefill.transport.outgoing and prefill.engine.cache.allocator.num_used == 0, prefill)
    decode.inbox.put(Release("req-1", written=True))   # as the router sends when the request ends
    until(lambda: decode.engine.cache.allocator.num_used == 0, decode, seconds=2)   # "stop" came, no timeout


# ---- shm only: its copies are the prefill worker's own, inside the step ----

@pytest.fixture
def shm_pair():
    with worker_pair("shm") as workers:
        yield workers


def test_over_shm_each_layer_is_in_the_decode_pool_when_the_next_one_starts(shm_pair, chat, monkeypatch):
    prefill, decode = shm_pair
    reserved = reserve(decode, chat)
    blocks, n = list(reserved.target.blocks), len(chat(PROMPT))
    in_place = []   # per layer, right after the prefill worker was told it was computed
    told = prefill.engine.layer_written

    def layer_written(layer, work):
        told(layer, work)
        seq = work[0][0]
        mine, theirs = prefill.engine.cache.export(seq.block_table, n), decode.engine.cache.export(blocks, n)
        in_place.append(torch.equal(mine.key[layer], theirs.key[layer])
                        and torch.equal(mine.value[layer], theirs.value[layer]))
    monkeypatch.setattr(prefill.engine, "layer_written", layer_written)
    ready = prefilled(prefill, chat, reserved.target)
    assert in_place == [True] * prefill.engine.cache.num_layers
    assert decode.transport.address is not None and prefill.transport.address is None   # only its pool is shared
    assert 0 < ready.hand_off.writing_seconds   # the copies' time inside the prefill is reported


def test_over_shm_a_pool_the_prefill_worker_cannot_map_gets_the_kv_after_the_prefill(shm_pair, chat, caplog):
    prefill, decode = shm_pair
    reserved = reserve(decode, chat)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    unreachable = replace(reserved.target, pool=replace(reserved.target.pool, pid=int(gone.stdout)))
    ready = prefilled(prefill, chat, unreachable)
    assert "cannot write into the decode worker's KV pool" in caplog.text   # said, not silent
    assert not ready.hand_off.written_during_prefill and not prefill.transport.outgoing
    decode.inbox.put(ImportKV(ready.hand_off))   # loaded into the reserved blocks
    until(lambda: any(isinstance(m, TransferDone) for m in decode.outbox.messages), decode)
    got = decode.engine.cache.export(list(reserved.target.blocks), ready.hand_off.num_kv_tokens)
    want = reference_kv(chat)
    assert torch.equal(want.key, got.key) and torch.equal(want.value, got.value)
    until(lambda: decode.engine.sequences.get("req-1") is None, decode)
    assert decode.engine.cache.allocator.num_used == 0 and not failed(decode)
