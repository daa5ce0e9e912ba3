"""What the engine streams out: one event per token, and one that ends the request."""
from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum


class FinishReason(StrEnum):
    STOP = "stop"              # an end-of-sequence token or a stop string
    LENGTH = "length"          # max_tokens reached
    ABORT = "abort"            # the client cancelled
    ERROR = "error"            # the request failed; the event carries the message
    HANDED_OFF = "handed_off"  # a prefill worker sent its KV on: the request goes on elsewhere


@dataclass(frozen=True)
class TokenLogprob:
    """A chosen token's log-probability under the model (before penalties and temperature, as vLLM's
    default "raw_logprobs") and the most likely alternatives, best first."""
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass
class TokenEvent:
    """One streamed token (or the end of a request, when finish_reason is set)."""
    request_id: str
    token_id: int | None
    text: str
    time: float
    finish_reason: FinishReason | None = None
    error: str | None = None
    logprob: TokenLogprob | None = None   # only for requests that asked for logprobs

    @classmethod
    def end(cls, request_id: str, reason: FinishReason, error: str | None = None,
            at: float | None = None) -> TokenEvent:
        """The event that ends a request without a token (an abort, an error)."""
        return cls(request_id, None, "", time.perf_counter() if at is None else at, reason, error)
