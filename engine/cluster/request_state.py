"""The router's record of one request, from submit to its last token: where it is and what it holds.

    colocated, or a short prompt under the conditional threshold:   RUNNING
    disaggregated, pulled:   PREFILLING ──KVReady──> TRANSFERRING ──TransferDone──> RUNNING
    disaggregated, pushed:   RESERVING ──Reserved──> PREFILLING ──> ...as above

Any phase may end (last token, abort, error, a worker's death); the router then frees what the
record holds: a reservation (Release to its decode worker) or a hand-off in flight (discard).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from ..core.request_stream import RequestStream
from .messages import AddRequest
from .transports import KVHandle


class Phase(enum.StrEnum):
    RESERVING = "reserving"        # push: a decode worker is reserving blocks; the prompt waits for them
    PREFILLING = "prefilling"      # on a prefill worker
    TRANSFERRING = "transferring"  # its KV is on its way into a decode worker
    RUNNING = "running"            # on the worker that streams its tokens


@dataclass
class RequestState:
    stream: RequestStream
    phase: Phase
    worker: str                          # where it is now (a prefill worker, then its decode worker)
    reserved_on: str | None = None       # push: the decode worker holding blocks for it
    targeted: bool = False               # push: the prefill worker was told where to write
    held: AddRequest | None = None       # RESERVING: the prompt, sent once the reservation answers
    handle: KVHandle | None = None       # TRANSFERRING: its KV's handle, until the decode worker has it
    aborted: bool = False                # cancelled: a hand-off that still comes is dropped

    def on(self, worker: str) -> bool:
        """Whether it depends on `worker` (runs there or holds blocks there)."""
        return worker in (self.worker, self.reserved_on)
