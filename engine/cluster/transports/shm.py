"""Shared memory between the workers of one host: the "minimum copies" route (like CUDA IPC or NVLink
between the GPUs of one node).

push (the usual way, on CPU pools): every decode worker keeps its KV pool in shared memory
    (shared_pool.py). When a prompt arrives, the router has a decode worker reserve blocks for it and
    sends the prompt to the prefill worker with where they are; the prefill worker copies each
    layer's KV into them as soon as the layer is computed, so when the prompt is done its KV is
    already in place (1 copy, pool to pool). The copies are done by the prefill worker's own thread
    inside the step: on a CPU they lengthen the prefill by their time (reported per request) instead
    of following it. The writer then tells the reservation "ready" or "stop" on its notice board
    (notices.py), so that freed blocks are never written to.
pull (no reservation: the decode worker had no room, or its pool is on a GPU; or a pool the prefill
    worker cannot map, whose reserved blocks the pulled KV then fills): the prefill worker
    gathers the KV into a shared-memory segment after the prefill, the decode worker loads it (a few
    layers at a time between its steps; into reserved blocks, at once) and unlinks it (2 copies).
"""
from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass
from multiprocessing import resource_tracker, shared_memory
from pathlib import Path

import torch

from ...core.kv_cache import PagedKVCache
from .base import Received, SendResult, TransferError, Transport, payload_shape, slot_runs, split_payload
from .notices import READY, STOP, NoticeBoard, Poster
from .shared_pool import SharedPool, open_pool, share

SHM_PREFIX = "pdlab-kv-"
log = logging.getLogger("pdlab.cluster")
WRITER_TIMEOUT_S = 120.0   # a released reservation is freed after this even if its writer never said it stopped


@dataclass(frozen=True)
class ShmHandle:
    """Pull: the segment holding one prompt's KV."""
    name: str
    shape: tuple[int, ...]

    def discard(self) -> None:
        try:
            shm = shared_memory.SharedMemory(name=self.name)
        except FileNotFoundError:
            return
        shm.close()
        shm.unlink()


@dataclass(frozen=True)
class ShmTarget:
    """Push: the blocks a decode worker reserved for one prompt, in its shared pool."""
    pool: SharedPool
    notices: str               # the decode worker's notice board
    blocks: tuple[int, ...]


@dataclass(frozen=True)
class ShmPushedHandle:
    """Push: the prompt's KV is in the decode worker's reserved blocks already."""
    request_id: str
    written_at: float          # when its last byte was

    def discard(self) -> None:
        """Nothing to free: the decode worker releases its reservation when the router tells it."""


@dataclass
class _Push:
    """The prefill side of one pushed prompt."""
    target: ShmTarget
    key: torch.Tensor                    # the decode worker's pool, mapped here
    value: torch.Tensor
    written_upto: int = 0                # tokens whose every layer is written
    seconds: float = 0.0                 # time spent writing, so far
    error: str | None = None


@dataclass
class _Written:
    """A pushed prompt's arrival on the decode side: complete when the hand-off comes."""
    finished_at: float

    def poll(self) -> bool:
        return True

    def cancel(self) -> None:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # alive, another user's
        return True
    return True


def _untrack(shm: shared_memory.SharedMemory) -> None:
    # The creator hands ownership to the receiver, which unlinks (unlink() also unregisters the
    # attach). Left registered, the tracker would unlink the segment when the creator exits.
    try:
        resource_tracker.unregister(shm._name, "shared_memory")  # noqa: SLF001
    except Exception:
        pass


class SharedMemoryTransport(Transport):
    name, copies = "shm", 2   # the pull's count; a push is 1
    pushes = True

    def __init__(self, settings=None):
        super().__init__(settings)
        self.cache: PagedKVCache | None = None
        self.address: SharedPool | None = None   # None unless a decode worker's pool on a CPU
        self._fd: int | None = None
        self.board = NoticeBoard()
        self.poster = Poster()
        self.outgoing: dict[str, _Push] = {}                       # push, prefill side
        self.notices: dict[str, tuple[float, str | None]] = {}    # push, decode side: (when, error or None)
        self.mapped: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}   # other workers' pools

    def attach(self, cache: PagedKVCache, receives_pushes: bool = False) -> None:
        """Only a pool others write into moves to shared memory (a copy of the whole pool at start)."""
        self.cache = cache
        if receives_pushes and cache.key.device.type == "cpu":
            self.address, self._fd = share(cache)

    def poll(self) -> bool:
        now = time.perf_counter()
        for message in self.board.drain():
            if message.startswith(READY):
                self.notices[message[len(READY):].decode()] = (now, None)
            elif message.startswith(STOP):
                request_id, _, error = message[len(STOP):].decode().partition("\n")
                self.notices[request_id] = (now, error or "it stopped")
        for request_id in [r for r, (at, _) in self.notices.items() if now - at > WRITER_TIMEOUT_S]:
            del self.notices[request_id]   # for reservations this worker no longer has
        return False

    # ---- push, prefill side ----

    def set_target(self, request_id: str, target: ShmTarget) -> None:
        """Where to write this prompt's KV, which is not computed yet. A pool this process cannot map
        (a host that hides other processes' descriptors, another user's worker) gets the KV after the
        prefill instead, into the same reserved blocks; the reservation hears at once that nothing
        will be written."""
        try:
            target.pool.check_fits(self.cache)
            for pid, fd in [w for w in self.mapped if not _alive(w[0])]:
                del self.mapped[pid, fd]   # a decode worker that is gone: let the kernel free its pool
            where = (target.pool.pid, target.pool.fd)
            if where not in self.mapped:
                self.mapped[where] = open_pool(target.pool)
        except TransferError as exc:
            log.warning("shm: cannot write into the decode worker's KV pool (%s); %s's KV is sent after "
                        "its prefill", exc, request_id)
            self._stop(target, request_id, f"not written: {exc}")
            return
        self.outgoing[request_id] = _Push(target, *self.mapped[where])

    def layer_written(self, layer: int, work) -> None:
        """Called by the model, inside a step, as soon as `layer`'s KV of the step's tokens is in the
        pool: copy that layer into the reserved blocks of every pushed prompt in the step."""
        if not self.outgoing:
            return
        for seq, n in work:
            push = self.outgoing.get(seq.request_id)
            if push is None or push.error:
                continue
            start = seq.num_computed   # the step's first token of this sequence
            if layer == 0 and push.written_upto < start:   # tokens taken from the prefix cache
                self._write(push, slice(None), push.written_upto, start, seq.block_table)
            self._write(push, slice(layer, layer + 1), start, start + n, seq.block_table)
            if layer == self.cache.key.shape[0] - 1:
                push.written_upto = start + n

    def _write(self, push: _Push, layers: slice, start: int, end: int, table: list[int]) -> None:
        began = time.perf_counter()
        try:
            if end > len(push.target.blocks) * self.cache.block_size:
                raise TransferError(f"the decode worker reserved room for {len(push.target.blocks)} blocks, "
                                    f"the prompt needs more")
            for here, there, tokens in slot_runs(table, push.target.blocks, self.cache.block_size, start, end):
                if there + tokens > push.key.shape[1]:
                    raise TransferError(f"block {there // self.cache.block_size} is outside the decode worker's pool")
                push.key[layers, there:there + tokens] = self.cache.key[layers, here:here + tokens]
                push.value[layers, there:there + tokens] = self.cache.value[layers, here:here + tokens]
        except TransferError as exc:
            push.error = f"shared-memory write failed: {exc}"
        push.seconds += time.perf_counter() - began

    def seal(self, request_id: str, cache: PagedKVCache, block_table: list[int], num_tokens: int) -> SendResult:
        """At the hand-off: write what is still unwritten, say "ready", and hand over a handle that says
        the KV is in place. The prompt's blocks here are freed as after any send."""
        start = time.perf_counter()
        push = self.outgoing[request_id]
        during = push.seconds
        if push.written_upto < num_tokens and not push.error:
            self._write(push, slice(None), push.written_upto, num_tokens, block_table)
        if push.error:
            self.drop(request_id)
            raise TransferError(push.error)
        del self.outgoing[request_id]
        written_at = time.perf_counter()
        self._notify(push.target, READY + request_id.encode())
        return SendResult(ShmPushedHandle(request_id, written_at), num_tokens * cache.bytes_per_token, start,
                          written_at - start, during)

    def drop(self, request_id: str) -> None:
        """The prompt ended here without a hand-off (finished, aborted, failed): no more writes."""
        push = self.outgoing.pop(request_id, None)
        if push is not None:
            self._stop(push.target, request_id, push.error or "the request ended before its hand-off")

    def decline(self, request_id: str, target: ShmTarget) -> None:
        """A target for a prompt refused here: nothing will be written."""
        self._stop(target, request_id, "not written")

    def _stop(self, target: ShmTarget, request_id: str, why: str) -> None:
        self._notify(target, STOP + f"{request_id}\n{why}".encode())

    def _notify(self, target: ShmTarget, message: bytes) -> None:
        if not self.poster.post(target.notices, message):
            self.mapped.pop((target.pool.pid, target.pool.fd), None)   # its worker is gone: unmap its pool

    @property
    def pushing(self) -> list[str]:
        """Request ids with a target and no hand-off yet."""
        return list(self.outgoing)

    # ---- push, decode side ----

    def push_target(self, request_id: str, block_table: list[int]) -> ShmTarget | None:
        """None when this pool is not shared (on a GPU): the prompt's KV is then pulled."""
        if self.address is None:
            return None
        self.notices.pop(request_id, None)   # a stale notice of an earlier request with this id
        return ShmTarget(self.address, self.board.address, tuple(block_table))

    def writes_ended(self, request_id: str, released_at: float) -> bool:
        """May the reservation's blocks be freed? Once its writer sent its final notice, or, if the
        writer died without one, WRITER_TIMEOUT_S after the release."""
        if request_id not in self.notices and time.monotonic() - released_at < WRITER_TIMEOUT_S:
            return False
        self.notices.pop(request_id, None)
        return True

    def start_read(self, handle, cache: PagedKVCache, block_table: list[int]) -> _Written:
        """A hand-off for reserved blocks: pushed there already, or (pulled) loaded into them now."""
        if isinstance(handle, ShmPushedHandle):
            return _Written(handle.written_at)
        received = self.open(handle, cache.key.dtype)
        try:
            cache.load(block_table, received.payload)
        finally:
            received.close()
        return _Written(time.perf_counter())

    # ---- pull ----

    def send(self, cache, block_table, num_tokens):
        start = time.perf_counter()
        shape = payload_shape(cache, num_tokens)
        half = cache.key.element_size() * int(torch.Size(shape).numel())
        shm = shared_memory.SharedMemory(name=SHM_PREFIX + uuid.uuid4().hex[:16], create=True, size=2 * half)
        _untrack(shm)
        flat = torch.frombuffer(shm.buf, dtype=cache.key.dtype)
        payload = split_payload(flat, shape)
        cache.export_into(block_table, num_tokens, payload.key, payload.value)
        del flat, payload  # release the buffer views before closing the mapping
        shm.close()
        return SendResult(ShmHandle(shm.name, shape), 2 * half, start, time.perf_counter() - start)

    def open(self, handle: ShmHandle, dtype):
        try:
            shm = shared_memory.SharedMemory(name=handle.name)
        except FileNotFoundError as exc:
            raise TransferError(f"shared-memory segment {handle.name} is gone") from exc

        def release():
            shm.close()
            shm.unlink()
        return Received(split_payload(torch.frombuffer(shm.buf, dtype=dtype), handle.shape), release)

    def close(self) -> None:
        self.outgoing.clear()
        self.mapped.clear()
        self.board.close()
        self.poster.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def leaked_shm_segments() -> list[str]:
    return sorted(p.name for p in Path("/dev/shm").glob(SHM_PREFIX + "*"))
