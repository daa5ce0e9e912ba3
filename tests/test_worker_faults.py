"""A worker's transfer failures, driven in-process: the request fails clearly, its blocks come back."""
import queue
import socket

import pytest

from engine.config import EngineConfig, SamplingParams
from engine.messages import Abort, ImportRequest, KVReady, StepReport, TransferDone
from engine.worker import Worker, WorkerSpec


class Collected:
    """Stands in for the pipe to the router: keeps what the worker sends."""

    def __init__(self):
        self.messages = []

    def send(self, message):
        self.messages.append(message)

    def events(self):
        return [e for m in self.messages if isinstance(m, StepReport) for e in m.events]


def make_worker(role: str, transport: str = "shm") -> tuple[Worker, Collected]:
    outbox = Collected()
    worker = Worker(WorkerSpec(f"{role}-0", role, EngineConfig(kv_cache_tokens=1024), transport), queue.Queue(), outbox)
    return worker, outbox


def iterate(worker: Worker, times: int = 10) -> None:
    for _ in range(times):
        report = StepReport(worker.spec.name)
        worker._advance_import(report)
        if worker.engine.has_work:
            report.events.extend(worker._hand_off_prefilled(worker.engine.step()))
        worker._send(report)


def import_request(handle: dict, tokens: int = 20) -> ImportRequest:
    return ImportRequest("req-1", list(range(100, 100 + tokens)), [7], SamplingParams(max_tokens=4), 0.0, handle,
                         tokens, 0.0)


@pytest.mark.parametrize("transport,handle,message", [
    ("shm", {"transport": "shm", "name": "pdlab-kv-missing", "shape": (30, 20, 3, 64)}, "is gone"),
    ("disk", {"transport": "disk", "path": "/nonexistent/kv.safetensors"}, "is gone"),
    ("tcp", {"transport": "tcp", "address": ["127.0.0.1", 9], "key": "x", "shape": (30, 20, 3, 64)}, "failed"),
])
def test_a_failed_transfer_fails_its_request_and_frees_nothing_it_never_held(transport, handle, message):
    worker, outbox = make_worker("decode", transport)
    if transport == "tcp":
        with socket.socket() as s:  # a port with nothing listening: the fetch is refused at once
            s.bind(("127.0.0.1", 0))
            handle["address"][1] = s.getsockname()[1]
    worker.imports.append(import_request(handle))
    iterate(worker, 2)
    errors = [e for e in outbox.events() if e.finish_reason == "error"]
    assert len(errors) == 1 and "KV transfer failed" in errors[0].error and message in errors[0].error
    assert worker.engine.cache.allocator.num_used == 0 and not worker.engine.has_work


def test_prefill_hands_off_and_decode_imports_layer_by_layer_then_abort_frees_blocks(chat):
    prefill, prefill_out = make_worker("prefill")
    decode, decode_out = make_worker("decode")
    prompt = chat("Tell me about the sea.")
    prefill.engine.add_request(prompt, SamplingParams(max_tokens=50, ignore_eos=True), "req-1")
    prefill.prefill_only.add("req-1")
    iterate(prefill, 1)
    ready = next(m for m in prefill_out.messages if isinstance(m, KVReady))
    assert prefill.engine.cache.allocator.num_used == 0      # handed off: the prefill side keeps nothing
    assert not prefill_out.events()                          # the first token waits for the KV to land
    decode.imports.append(ImportRequest(ready.request_id, ready.prompt_ids, ready.output_ids, ready.params,
                                        ready.arrival, ready.handle, ready.num_kv_tokens, ready.send_started))
    iterate(decode, 1)
    assert decode.active_import is not None and decode.active_import.next_layer == 6   # not all 30 layers at once
    iterate(decode, 5)
    assert any(isinstance(m, TransferDone) for m in decode_out.messages)
    assert decode_out.events()[0].token_id == ready.output_ids[0]
    decode._handle(Abort("req-1"))
    assert decode.engine.cache.allocator.num_used == 0
    assert decode_out.events()[-1].finish_reason == "abort"
