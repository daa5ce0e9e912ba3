"""A worker driven in-process through its public step(): transfer failures fail their request clearly
and free its blocks; a hand-off goes prefill -> decode layer by layer; an abort frees everything."""
import queue
import socket
import time

import pytest

from engine.cluster.messages import Abort, AddRequest, ImportKV, KVHandOff, KVReady, TransferDone
from engine.cluster.placement import WorkerSpec
from engine.cluster.topology import Role
from engine.cluster.transports import DiskHandle, ShmHandle, TcpHandle, TransportSettings
from engine.cluster.transports.base import LAYERS_PER_POLL
from engine.cluster.worker import Worker
from engine.core.config import EngineConfig, SamplingParams
from tests.helpers import Collected


@pytest.fixture
def make_worker():
    """Workers driven in-process; their transports are closed afterwards, as run() would at its end."""
    made = []

    def make(role: Role, transport: str = "shm") -> tuple[Worker, Collected]:
        outbox = Collected()
        spec = WorkerSpec(f"{role}-0", role, EngineConfig(kv_cache_tokens=1024), TransportSettings(transport))
        made.append(Worker(spec, queue.Queue(), outbox))
        return made[-1], outbox
    yield make
    for worker in made:
        worker.transport.close()


def step(worker: Worker, times: int = 1) -> None:
    for _ in range(times):
        worker.step()


def hand_off(handle, tokens: int = 20) -> KVHandOff:
    return KVHandOff("req-1", list(range(100, 100 + tokens)), [7], SamplingParams(max_tokens=4), 0.0, handle,
                     tokens, 0, 0.0, 0.0)


def refused_port() -> int:
    """A port with nothing listening: a fetch from it is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("transport,handle,message", [
    ("shm", lambda: ShmHandle("pdlab-kv-missing", (30, 20, 3, 64)), "is gone"),
    ("disk", lambda: DiskHandle("/nonexistent/kv.safetensors"), "is gone"),
    ("tcp", lambda: TcpHandle(("127.0.0.1", refused_port()), "x", (30, 20, 3, 64)), "failed"),
])
def test_a_failed_transfer_fails_its_request_and_frees_nothing_it_never_held(make_worker, transport, handle,
                                                                            message):
    worker, outbox = make_worker(Role.DECODE, transport)
    worker.inbox.put(ImportKV(hand_off(handle())))
    deadline = time.monotonic() + 10   # tcp's pull fails on its own thread: the loop hears of it a little later
    while not any(e.finish_reason == "error" for e in outbox.events()) and time.monotonic() < deadline:
        step(worker)
    errors = [e for e in outbox.events() if e.finish_reason == "error"]
    assert len(errors) == 1 and "KV transfer failed" in errors[0].error and message in errors[0].error
    assert worker.engine.cache.allocator.num_used == 0 and worker.idle


def test_prefill_hands_off_and_decode_imports_layer_by_layer_then_abort_frees_blocks(make_worker, chat):
    prefill, prefill_out = make_worker(Role.PREFILL)
    decode, decode_out = make_worker(Role.DECODE)
    prefill.inbox.put(AddRequest("req-1", chat("Tell me about the sea."),
                                 SamplingParams(max_tokens=50, ignore_eos=True), 0.0, prefill_only=True))
    step(prefill)
    ready = next(m for m in prefill_out.messages if isinstance(m, KVReady))
    assert prefill.engine.cache.allocator.num_used == 0      # handed off: the prefill side keeps nothing
    assert not prefill_out.events()                          # the first token waits for the KV to land
    decode.inbox.put(ImportKV(ready.hand_off))
    step(decode)
    assert decode.imports["req-1"].incoming.next_layer == LAYERS_PER_POLL < 30
    step(decode, 30 // LAYERS_PER_POLL - 1)
    assert any(isinstance(m, TransferDone) for m in decode_out.messages)
    assert decode_out.events()[0].token_id == ready.hand_off.output_ids[0]
    decode.inbox.put(Abort("req-1"))
    step(decode)
    assert decode.engine.cache.allocator.num_used == 0
    assert decode_out.events()[-1].finish_reason == "abort"
