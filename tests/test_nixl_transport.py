"""The nixl transport's pull, with real NIXL agents: two workers driven in-process hand a prompt over,
the decode worker reading the prefill worker's blocks into its own. Every fault (bad descriptors, a
dead agent, an abandoned read, a reader that never comes) fails only its request, with a clear
error, and frees the blocks on both sides. Its push is tested with shm's in test_kv_push.py."""
import multiprocessing
import time
from dataclasses import replace

import pytest
import torch

from engine.cluster.messages import Abort, ImportKV, TransferDone
from engine.cluster.transports import available_transports, nixl
from engine.core.kv_cache import PagedKVCache
from tests.worker_pair import failed, prefilled, until, worker_pair

pytestmark = pytest.mark.skipif(available_transports()["nixl"] is not None, reason="NIXL cannot load here")


@pytest.fixture
def pair():
    """A prefill and a decode worker over nixl, in this process (each its own NIXL agent)."""
    with worker_pair("nixl") as workers:
        yield workers


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
