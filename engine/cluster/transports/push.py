"""The push: a prompt's KV written into blocks a decode worker reserved, layer by layer as it computes.

What shm and nixl share (each writes bytes its own way: `_write`, `_post_notice`, `_sealed`):

prefill side: set_target() says where a prompt's KV goes; layer_written(), called by the model inside
    a step, writes each layer of the step's tokens as soon as it is in the pool; seal() at the
    hand-off writes what is left and returns a PushedHandle; drop() when the prompt ended without a
    hand-off; decline() for a target whose prompt was refused. Every target ends with one final
    notice to its reservation: "ready" (every layer is in place) or "stop" (no more writes).
decode side: push_target() for freshly reserved blocks; receive() of a PushedHandle waits for the
    final notice (a PushArrival); writes_ended() says when a released reservation's blocks can be
    freed: once its writer's final notice came, or WRITER_TIMEOUT_S after the release if the writer
    died without one.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from ...core.kv_cache import PagedKVCache
from .base import KVHandle, SendResult, TransferError, Transport

READY, STOP = b"ready:", b"stop:"   # writer -> reservation: every layer is in place / no more writes
WRITER_TIMEOUT_S = 120.0   # a released reservation is freed after this even if its writer never said it stopped
ARRIVAL_TIMEOUT_S = 30.0   # a decode worker gives up on a pushed prompt's "ready" after this


def ready_notice(request_id: str, at: float | None = None) -> bytes:
    """`at`: when the last byte was in place, if the writer knows (shm's copies); else the notice's arrival."""
    return READY + request_id.encode() + (b"" if at is None else f"\n{at!r}".encode())


def stop_notice(request_id: str, why: str) -> bytes:
    return STOP + f"{request_id}\n{why}".encode()


@dataclass(frozen=True)
class PushedHandle:
    """The prompt's KV is in, or on its way into, the decode worker's reserved blocks."""
    request_id: str
    writer: str                # the prefill worker's transport, for error messages

    def discard(self) -> None:
        """Nothing to free: the decode worker releases its reservation when the router tells it, and the
        writer frees its own blocks when its writes end."""


@dataclass
class Push:
    """The prefill side of one pushed prompt; each transport adds what its writes need."""
    target: Any                # the transport's target (ShmTarget, NixlTarget)
    written_upto: int = 0      # tokens whose every layer is written (or posted)
    error: str | None = None
    ended: bool = False        # sealed or dropped: no more writes will be made

    @property
    def writing(self) -> bool:
        return not (self.error or self.ended)


class PushArrival:
    """A pushed prompt on the decode side: in place when its writer's "ready" notice came."""

    def __init__(self, transport: PushTransport, handle: PushedHandle):
        self.transport, self.handle = transport, handle
        self.deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
        self.finished_at = 0.0

    def poll(self) -> bool:
        notice = self.transport.final_notice(self.handle.request_id)
        if notice is not None:
            at, error = notice
            if error is not None:   # the notice stays: writes_ended() frees the reservation with it
                raise TransferError(f"{self.handle.writer} could not write the KV: {error}")
            self.transport.forget_notice(self.handle.request_id)
            self.finished_at = at
            return True
        if time.monotonic() > self.deadline:
            raise TransferError(f"{self.handle.writer} did not finish writing the KV in {ARRIVAL_TIMEOUT_S:.0f} s")
        return False

    def cancel(self) -> None:
        """Nothing held here: the reservation is released by the worker."""


class PushTransport(Transport):
    pushes = True

    def __init__(self, settings=None):
        super().__init__(settings)
        self.outgoing: dict[str, Push] = {}                        # prefill side, by request id
        self.notices: dict[str, tuple[float, str | None]] = {}     # decode side: request id -> (when, error)
        self._lock = threading.Lock()   # notices may be noted on a transport's own thread (nixl's)

    # ---- what each push transport does its own way ----

    def set_target(self, request_id: str, target) -> None:
        """Where to write this prompt's KV, which is not computed yet."""
        raise NotImplementedError

    def _write(self, push: Push, layers: range, start: int, end: int, table: list[int]) -> None:
        """Write (or post) `layers` of token positions [start, end); on failure set push.error."""
        raise NotImplementedError

    def _sealed(self, request_id: str, push: Push, block_table: list[int], num_tokens: int,
                started: float) -> SendResult:
        """Every write is made: tell the reservation (now, or when the writes end) and return the result."""
        raise NotImplementedError

    def _post_notice(self, target, message: bytes) -> None:
        """A notice to the reservation behind `target` (best effort: its worker may be gone)."""
        raise NotImplementedError

    def _target(self, block_table: list[int]):
        """Where another worker writes into these reserved blocks; None if it cannot (the KV is pulled)."""
        raise NotImplementedError

    def drop(self, request_id: str) -> None:
        """The prompt ended here without a hand-off (finished, aborted, failed): no more writes, and
        the reservation hears "stop" (at once, or once writes in flight end)."""
        raise NotImplementedError

    # ---- prefill side ----

    def layer_written(self, layer: int, work) -> None:
        """Called by the model, inside a step, as soon as `layer`'s KV of the step's tokens is in the
        pool: write that layer into the reserved blocks of every pushed prompt in the step."""
        pushed = [(seq, n, push) for seq, n in work if (push := self.outgoing.get(seq.request_id)) and push.writing]
        if not pushed:
            return
        self._before_writes()
        layers = self.cache.num_layers
        for seq, n, push in pushed:
            start = seq.num_computed   # the step's first token of this sequence
            if layer == 0 and push.written_upto < start:   # tokens taken from the prefix cache
                self._write(push, range(layers), push.written_upto, start, seq.block_table)
            self._write(push, range(layer, layer + 1), start, start + n, seq.block_table)
            if layer == layers - 1:
                push.written_upto = start + n

    def _before_writes(self) -> None:
        """Before a layer's writes (a GPU transport waits for the layer's KV to be in memory)."""

    def seal(self, request_id: str, cache: PagedKVCache, block_table: list[int], num_tokens: int) -> SendResult:
        """At the hand-off: write what is still unwritten and hand over a PushedHandle. Raises
        TransferError (having dropped the push) if any write failed."""
        started = time.perf_counter()
        push = self.outgoing[request_id]
        if push.written_upto < num_tokens and not push.error:
            self._write(push, range(cache.num_layers), push.written_upto, num_tokens, block_table)
            push.written_upto = num_tokens
        if push.error:
            self.drop(request_id)
            raise TransferError(push.error)
        return self._sealed(request_id, push, block_table, num_tokens, started)

    def decline(self, request_id: str, target) -> None:
        """A target for a prompt refused here: nothing will be written."""
        self._post_notice(target, stop_notice(request_id, "not written"))

    @property
    def pushing(self) -> list[str]:
        """Request ids with a target and no hand-off yet."""
        with self._lock:
            return [r for r, push in self.outgoing.items() if not push.ended]

    # ---- decode side ----

    def push_target(self, request_id: str, block_table: list[int]):
        self.forget_notice(request_id)   # a stale notice of an earlier request with this id
        return self._target(block_table)

    def receive(self, handle: KVHandle, block_table: list[int]):
        if isinstance(handle, PushedHandle):
            return PushArrival(self, handle)
        return super().receive(handle, block_table)

    def _note(self, message: bytes) -> bool:
        """Keep a writer's final notice; False if `message` is not one."""
        now = time.perf_counter()
        if message.startswith(READY):
            request_id, _, at = message[len(READY):].decode().partition("\n")
            notice = (float(at) if at else now, None)
        elif message.startswith(STOP):
            request_id, _, error = message[len(STOP):].decode().partition("\n")
            notice = (now, error or "it stopped")
        else:
            return False
        with self._lock:
            self.notices[request_id] = notice
        return True

    def final_notice(self, request_id: str) -> tuple[float, str | None] | None:
        """(when, error or None) once the writer said it is done ("ready") or stopped; None before."""
        with self._lock:
            return self.notices.get(request_id)

    def forget_notice(self, request_id: str) -> None:
        with self._lock:
            self.notices.pop(request_id, None)

    def writes_ended(self, request_id: str, released_at: float) -> bool:
        """May a released reservation's blocks be freed? Once its writer sent its final notice, or, if
        the writer died without one, WRITER_TIMEOUT_S after the release (time.monotonic())."""
        if self.final_notice(request_id) is None and time.monotonic() - released_at < WRITER_TIMEOUT_S:
            return False
        self.forget_notice(request_id)
        return True

    def _expire_notices(self) -> None:
        """Notices for reservations this worker no longer has (their import failed or was released)."""
        now = time.perf_counter()
        with self._lock:
            for request_id in [r for r, (at, _) in self.notices.items() if now - at > WRITER_TIMEOUT_S]:
                del self.notices[request_id]
