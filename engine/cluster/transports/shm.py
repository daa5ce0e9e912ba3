"""Shared memory: the prefill pool gathers straight into a segment the decode pool reads (2 copies;
the "minimum copies" route, like CUDA IPC / NVLink between GPUs of one node)."""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from multiprocessing import resource_tracker, shared_memory
from pathlib import Path

import torch

from .base import Received, SendResult, TransferError, Transport, payload_shape, split_payload

SHM_PREFIX = "pdlab-kv-"


@dataclass(frozen=True)
class ShmHandle:
    name: str
    shape: tuple[int, ...]

    def discard(self) -> None:
        try:
            shm = shared_memory.SharedMemory(name=self.name)
        except FileNotFoundError:
            return
        shm.close()
        shm.unlink()


def _untrack(shm: shared_memory.SharedMemory) -> None:
    # The creator hands ownership to the receiver, which unlinks (unlink() also unregisters the
    # attach). Left registered, the tracker would unlink the segment when the creator exits.
    try:
        resource_tracker.unregister(shm._name, "shared_memory")  # noqa: SLF001
    except Exception:
        pass


class SharedMemoryTransport(Transport):
    name, copies = "shm", 2

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


def leaked_shm_segments() -> list[str]:
    return sorted(p.name for p in Path("/dev/shm").glob(SHM_PREFIX + "*"))
