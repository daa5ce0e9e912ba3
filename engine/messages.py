"""Typed messages between the router and its worker processes (pickled over multiprocessing queues)."""
from __future__ import annotations

from dataclasses import dataclass, field

from .config import SamplingParams
from .engine import TokenEvent
from .sequence import RequestRecord, StepRecord


# ---- router -> worker ----

@dataclass
class AddRequest:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    arrival: float
    prefill_only: bool = False    # hand the KV off after the first token instead of decoding


@dataclass
class ImportRequest:
    request_id: str
    prompt_ids: list[int]
    output_ids: list[int]
    params: SamplingParams
    arrival: float
    handle: dict
    num_kv_tokens: int
    send_started: float


@dataclass
class Abort:
    request_id: str


@dataclass
class Shutdown:
    pass


# ---- worker -> router ----

@dataclass
class Ready:
    worker: str
    device: str
    detail: str


@dataclass
class StepReport:
    """Everything one worker iteration produced."""
    worker: str
    events: list[TokenEvent] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    finished: list[RequestRecord] = field(default_factory=list)
    running: int = 0
    waiting: int = 0
    kv_blocks_used: int = 0
    kv_blocks_total: int = 0


@dataclass
class KVReady:
    worker: str
    request_id: str
    prompt_ids: list[int]
    output_ids: list[int]
    params: SamplingParams
    arrival: float
    handle: dict
    num_kv_tokens: int
    nbytes: int
    send_started: float
    send_seconds: float


@dataclass
class TransferDone:
    worker: str
    request_id: str
    receive_seconds: float
    finished_at: float


@dataclass
class WorkerFailed:
    worker: str
    error: str
