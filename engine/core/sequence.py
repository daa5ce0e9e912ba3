"""One request inside the engine: its tokens, its place in the KV cache, and its timeline."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum, StrEnum

import torch

from .config import SamplingParams
from .events import FinishReason, TokenLogprob


class Status(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class RequestRecord:
    """Timestamps (time.perf_counter) of one request, as the engine saw it."""
    request_id: str
    prompt_tokens: int
    arrival: float
    scheduled: float | None = None
    first_token: float | None = None
    token_times: list[float] = field(default_factory=list)
    finish: float | None = None
    finish_reason: FinishReason | None = None
    error: str | None = None
    preemptions: int = 0
    cached_tokens: int = 0         # prompt tokens whose KV came from the prefix cache
    cache_tier: str = ""           # where they came from: "memory" or "disk"
    worker: str = ""

    @property
    def output_tokens(self) -> int:
        return len(self.token_times)


class StepKind(StrEnum):
    PREFILL = "prefill"    # prompt tokens only
    DECODE = "decode"      # one token per running sequence
    MIXED = "mixed"        # decodes and a piece of a prompt together (chunked prefill)


@dataclass
class StepRecord:
    start: float
    duration: float
    kind: StepKind
    num_tokens: int      # tokens fed to the model
    batch_size: int      # sequences in the step
    worker: str = ""
    prompt_requests: tuple[str, ...] = ()   # requests whose prompt tokens this step computed


@dataclass
class Sequence:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    record: RequestRecord
    output_ids: list[int] = field(default_factory=list)
    output_logprobs: list[TokenLogprob] = field(default_factory=list)   # one per output token, if asked for
    block_table: list[int] = field(default_factory=list)
    num_computed: int = 0          # leading tokens whose KV is in the cache
    status: Status = Status.WAITING
    output_text: str = ""
    generator: torch.Generator | None = None
    prefix_checked: bool = False   # looked up in the prefix cache since it last lost its KV

    @property
    def token_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def num_pending(self) -> int:
        """Tokens still to feed before the next token can be sampled (1 while decoding)."""
        return self.num_tokens - self.num_computed

    @property
    def is_prefilling(self) -> bool:
        return self.num_pending > 1

    def finish(self, reason: FinishReason, error: str | None = None) -> None:
        self.status = Status.FINISHED
        self.record.finish = time.perf_counter()
        self.record.finish_reason = reason
        self.record.error = error
