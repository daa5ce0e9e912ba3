"""What every push transport shares (push.py) and how a payload is loaded (base.py), on their own."""
import time

import torch

from engine.cluster.transports import push
from engine.cluster.transports.base import LAYERS_PER_POLL, PayloadLoad, Received, TransferError, slot_runs
from engine.cluster.transports.push import PushArrival, PushedHandle, PushTransport, ready_notice, stop_notice
from engine.core.kv_cache import KVPayload, PagedKVCache


def cache(layers: int = 8) -> PagedKVCache:
    return PagedKVCache(layers, 2, 4, num_blocks=8, block_size=4, dtype=torch.float32, device=torch.device("cpu"))


def test_a_ready_notice_carries_the_writers_time_and_a_stop_its_reason():
    t = PushTransport()
    assert t._note(ready_notice("a", 12.5)) and t.final_notice("a") == (12.5, None)
    assert t._note(stop_notice("b", "the request ended")) and t.final_notice("b")[1] == "the request ended"
    assert not t._note(b"done:something-else")   # not a push's notice: the transport's own


def test_a_released_reservation_is_freed_on_its_writers_notice_or_after_the_writer_timeout(monkeypatch):
    t = PushTransport()
    released = time.monotonic()
    assert not t.writes_ended("a", released)
    t._note(stop_notice("a", "stopped"))
    assert t.writes_ended("a", released) and t.final_notice("a") is None   # the notice is used up
    monkeypatch.setattr(push, "WRITER_TIMEOUT_S", 0.0)
    assert t.writes_ended("never-heard-of", released)


def test_new_blocks_for_a_request_id_forget_an_old_notice_of_that_id():
    class Local(PushTransport):
        def _target(self, block_table):
            return tuple(block_table)
    t = Local()
    t._note(stop_notice("a", "from an earlier request"))
    assert t.push_target("a", [3, 4]) == (3, 4) and t.final_notice("a") is None


def test_a_push_arrives_with_its_ready_notice_and_fails_with_a_stop():
    t = PushTransport()
    ok, bad = PushArrival(t, PushedHandle("ok", "w")), PushArrival(t, PushedHandle("bad", "writer-7"))
    assert not ok.poll()
    t._note(ready_notice("ok", 3.0))
    assert ok.poll() and ok.finished_at == 3.0
    t._note(stop_notice("bad", "disk full"))
    try:
        bad.poll()
    except TransferError as exc:
        assert "writer-7 could not write the KV: disk full" in str(exc)
    else:
        raise AssertionError("a stop notice must fail the arrival")
    assert t.final_notice("bad") is not None   # kept: the reservation is freed with it


def test_a_payload_is_loaded_a_few_layers_per_poll_and_released_once():
    pool = cache(layers=2 * LAYERS_PER_POLL + 1)
    table = pool.allocator.allocate(2)
    key = torch.arange(pool.num_layers * 6 * 2 * 4, dtype=torch.float32).view(pool.num_layers, 6, 2, 4)
    releases = []
    load = PayloadLoad(Received(KVPayload(key, -key), lambda: releases.append(1)), pool, table)
    assert [load.poll() for _ in range(3)] == [False, False, True] and load.next_layer >= pool.num_layers
    assert torch.equal(pool.export(table, 6).key, key) and releases == [1]
    load.cancel()
    assert releases == [1]


def test_slot_runs_join_blocks_that_are_consecutive_on_both_sides():
    assert slot_runs([0, 1, 5], [2, 3, 4], 4, 0, 10) == [[0, 8, 8], [20, 16, 2]]
