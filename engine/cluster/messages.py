"""Typed messages between the router and its worker processes (pickled over queues and pipes)."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..core.config import SamplingParams
from ..core.events import TokenEvent, TokenLogprob
from ..core.sequence import RequestRecord, StepRecord
from .transports import KVHandle, PushTarget


@dataclass(frozen=True)
class KVHandOff:
    """A prefilled request on its way from a prefill worker to a decode worker: what the decode side
    needs to go on with it, and the handle of its KV. The prefill worker sends it in KVReady; the
    router forwards the same record in ImportKV."""
    request_id: str
    prompt_ids: list[int]
    output_ids: list[int]        # the first token, computed by the prefill worker
    params: SamplingParams
    arrival: float
    handle: KVHandle
    num_kv_tokens: int
    nbytes: int
    send_started: float
    send_seconds: float
    output_logprobs: tuple[TokenLogprob, ...] = ()   # the first token's, if the request asked for logprobs
    written_during_prefill: bool = False   # pushed layer by layer as computed: only the rest waits after it
    writing_seconds: float = 0.0           # ...and how long the prefill worker spent writing it then (shm's
                                           # copies; 0 where the writes run on their own, as NIXL's)


@dataclass(frozen=True)
class WorkerLoad:
    """How busy one worker is, as of its last report."""
    running: int = 0
    waiting: int = 0             # queued prompts and KV imports
    kv_blocks_used: int = 0
    kv_blocks_total: int = 0
    prefix_cache: dict = field(default_factory=dict)   # tier -> its size and counts (LLMEngine.prefix_cache_stats)

    @property
    def kv_usage(self) -> float:
        return self.kv_blocks_used / self.kv_blocks_total if self.kv_blocks_total else 0.0


# ---- router -> worker ----

@dataclass
class AddRequest:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    arrival: float
    prefill_only: bool = False    # hand the KV off after the first token instead of decoding
    push_target: PushTarget | None = None   # push: the decode worker's reserved blocks to write into


@dataclass
class ImportKV:
    hand_off: KVHandOff


@dataclass
class Reserve:
    """Push transports: reserve blocks for a prompt that a prefill worker is about to compute."""
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    arrival: float


@dataclass
class Release:
    """To the decode worker: the request ended before its KV came; free the reservation once its
    writer (if it was told where to write) says it has stopped."""
    request_id: str
    written: bool


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
    load: WorkerLoad = WorkerLoad()


@dataclass
class KVReady:
    worker: str
    hand_off: KVHandOff


@dataclass
class Reserved:
    worker: str
    request_id: str
    target: PushTarget | None   # None if the decode worker had no room (the KV is then pulled)


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
