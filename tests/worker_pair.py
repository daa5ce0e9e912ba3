"""A prefill and a decode worker driven in-process, step by step, and what the transport tests ask of them."""
from __future__ import annotations

import contextlib
import queue
import time

from engine.cluster.messages import AddRequest, KVReady
from engine.cluster.placement import WorkerSpec
from engine.cluster.topology import Role
from engine.cluster.transports import TransportSettings
from engine.cluster.worker import Worker
from engine.core.config import EngineConfig, SamplingParams
from tests.helpers import Collected

PROMPT = "Tell me about the sea and the wind."
PARAMS = SamplingParams(max_tokens=8, ignore_eos=True)


@contextlib.contextmanager
def worker_pair(transport: str, decode_tokens: int = 1024):
    """(prefill, decode) workers over `transport`, their transports closed after."""
    workers = [Worker(WorkerSpec(f"{role}-0", role, EngineConfig(kv_cache_tokens=tokens),
                                 TransportSettings(transport)), queue.Queue(), Collected())
               for role, tokens in ((Role.PREFILL, 1024), (Role.DECODE, decode_tokens))]
    try:
        yield tuple(workers)
    finally:
        for worker in workers:
            worker.transport.close()


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


def failed(worker: Worker) -> list[str]:
    return [e.error for e in worker.outbox.events() if e.finish_reason == "error"]
