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
    gathers the KV into a shared-memory segment after the prefill, the decode worker loads it a few
    layers at a time between its steps and unlinks it (2 copies).
"""
from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass, replace
from multiprocessing import resource_tracker, shared_memory
from pathlib import Path

import torch

from ...core.kv_cache import PagedKVCache
from .base import Received, SendResult, TransferError, payload_shape, slot_runs, split_payload
from .notices import NoticeBoard, Poster
from .push import Push, PushedHandle, PushTransport, ready_notice, stop_notice
from .shared_pool import SharedPool, open_pool, share

SHM_PREFIX = "pdlab-kv-"
log = logging.getLogger("pdlab.cluster")


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


@dataclass
class _ShmPush(Push):
    key: torch.Tensor | None = None      # the decode worker's pool, mapped here
    value: torch.Tensor | None = None
    seconds: float = 0.0                 # time spent writing, so far


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


class SharedMemoryTransport(PushTransport):
    name, copies = "shm", 2   # the pull's count; a push is 1

    def __init__(self, settings=None):
        super().__init__(settings)
        self.address: SharedPool | None = None   # None unless a decode worker's pool on a CPU
        self._fd: int | None = None
        self.board = NoticeBoard()
        self.poster = Poster()
        self.mapped: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}   # other workers' pools

    def attach(self, cache: PagedKVCache, receives_pushes: bool = False) -> None:
        """Only a pool others write into moves to shared memory (a copy of the whole pool at start)."""
        super().attach(cache)
        if receives_pushes and cache.key.device.type == "cpu":
            self.address, self._fd = share(cache)

    def poll(self) -> bool:
        for message in self.board.drain():
            self._note(message)
        self._expire_notices()
        return False

    # ---- push, prefill side ----

    def set_target(self, request_id: str, target: ShmTarget) -> None:
        """A pool this process cannot map (a host that hides other processes' descriptors, another
        user's worker) gets the KV after the prefill instead, into the same reserved blocks; the
        reservation hears at once that nothing will be written."""
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
            self._post_notice(target, stop_notice(request_id, f"not written: {exc}"))
            return
        key, value = self.mapped[where]
        self.outgoing[request_id] = _ShmPush(target, key=key, value=value)

    def _write(self, push: _ShmPush, layers: range, start: int, end: int, table: list[int]) -> None:
        """Copies made by this process, inside the step: on a CPU they lengthen the prefill by their time."""
        began = time.perf_counter()
        which = slice(layers.start, layers.stop)
        try:
            if end > len(push.target.blocks) * self.cache.block_size:
                raise TransferError(f"the decode worker reserved room for {len(push.target.blocks)} blocks, "
                                    f"the prompt needs more")
            for here, there, tokens in slot_runs(table, push.target.blocks, self.cache.block_size, start, end):
                if there + tokens > push.key.shape[1]:
                    raise TransferError(f"block {there // self.cache.block_size} is outside the decode worker's pool")
                push.key[which, there:there + tokens] = self.cache.key[which, here:here + tokens]
                push.value[which, there:there + tokens] = self.cache.value[which, here:here + tokens]
        except TransferError as exc:
            push.error = f"shared-memory write failed: {exc}"
        push.seconds += time.perf_counter() - began

    def seal(self, request_id, cache, block_table, num_tokens) -> SendResult:
        inside = self.outgoing[request_id].seconds   # the copies made during the prefill, before the seal's
        return replace(super().seal(request_id, cache, block_table, num_tokens), writing_seconds=inside)

    def _sealed(self, request_id, push: _ShmPush, block_table, num_tokens, started) -> SendResult:
        """The copies are done: say "ready" now. The prompt's blocks here are freed as after any send."""
        del self.outgoing[request_id]
        written_at = time.perf_counter()
        self._post_notice(push.target, ready_notice(request_id, written_at))
        return SendResult(PushedHandle(request_id, self.name), num_tokens * self.cache.bytes_per_token, started,
                          written_at - started)

    def drop(self, request_id: str) -> None:
        push = self.outgoing.pop(request_id, None)
        if push is not None:
            why = push.error or "the request ended before its hand-off"
            self._post_notice(push.target, stop_notice(request_id, why))

    def _post_notice(self, target: ShmTarget, message: bytes) -> None:
        if not self.poster.post(target.notices, message):
            self.mapped.pop((target.pool.pid, target.pool.fd), None)   # its worker is gone: unmap its pool

    # ---- push, decode side ----

    def _target(self, block_table: list[int]) -> ShmTarget | None:
        """None when this pool is not shared (on a GPU): the prompt's KV is then pulled."""
        if self.address is None:
            return None
        return ShmTarget(self.address, self.board.address, tuple(block_table))

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
