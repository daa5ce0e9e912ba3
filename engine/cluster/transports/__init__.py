"""Moving one request's KV cache from a prefill worker to a decode worker.

Each transport stands for a route in a real cluster and counts the copies of the KV bytes between
the two pools (one module each; base.py says what all do, push.py what shm and nixl add):
  shm   shared memory: the prefill worker copies each layer's KV into blocks the decode worker
        reserved, as soon as the layer is computed, 1 copy (else a segment after the prefill, 2 copies):
        the "minimum copies" route (CUDA IPC / NVLink in one node)
  disk  safetensors files, optional fsync, 4 copies: the NVMe/SSD or 3FS route
  tcp   a loopback socket pulled by the decode side, 4 copies: the network (RDMA) route
  nixl  NVIDIA's NIXL library, as vLLM, SGLang and Dynamo use it: the prefill worker writes each
        layer's KV into blocks the decode worker reserved, as soon as the layer is computed, 1 copy
        (UCX: CMA on one host, RDMA, NVLink)
"""
from __future__ import annotations

from dataclasses import dataclass

from .base import PUSH_COPIES, Incoming, KVHandle, SendResult, TransferError, Transport
from .disk import DiskHandle, DiskTransport, leaked_kv_folders
from .push import PushedHandle, PushTransport
from .shm import ShmHandle, ShmTarget, SharedMemoryTransport, leaked_shm_segments
from .nixl import NixlHandle, NixlTarget, NixlTransport, unavailable_reason
from .tcp import TcpHandle, TcpTransport

PushTarget = ShmTarget | NixlTarget   # where a prefill worker writes a prompt's KV (a decode worker's blocks)

# The one registry: a transport's name -> its class (which knows its copies and its handle type).
TRANSPORTS: dict[str, type[Transport]] = {t.name: t for t in (SharedMemoryTransport, DiskTransport, TcpTransport,
                                                               NixlTransport)}


def why_unavailable(name: str) -> str | None:
    """None if the transport works here, else why not (only nixl needs a library that may not load)."""
    return unavailable_reason() if name == NixlTransport.name else None


def available_transports() -> dict[str, str | None]:
    """Each transport's name -> None if it works here, else why not."""
    return {name: why_unavailable(name) for name in TRANSPORTS}


def working_transports() -> list[str]:
    return [name for name in TRANSPORTS if why_unavailable(name) is None]


@dataclass(frozen=True)
class TransportSettings:
    """Which transport the workers use, and its options."""
    name: str = "shm"
    disk_folder: str | None = None   # disk only: where each worker makes its private folder (default: temp)
    fsync: bool = False              # disk only: flush each file to the device before handing it over
    push: bool = True                # shm, nixl: write the KV into reserved blocks during the prefill
                                     # (False: send it after the prefill, to compare)

    def __post_init__(self):
        if self.name not in TRANSPORTS:
            raise ValueError(f"transport must be one of {list(TRANSPORTS)}, got {self.name!r}")
        reason = why_unavailable(self.name)
        if reason:
            raise ValueError(f"transport {self.name!r} is unavailable here ({reason}); the others work")

    @property
    def copies(self) -> int:
        return TRANSPORTS[self.name].copies

    @property
    def pushes(self) -> bool:
        return self.push and TRANSPORTS[self.name].pushes


def make_transport(settings: TransportSettings) -> Transport:
    return TRANSPORTS[settings.name](settings)


__all__ = ["TRANSPORTS", "PUSH_COPIES", "available_transports", "working_transports", "TransportSettings",
           "make_transport", "Transport", "PushTransport", "TransferError", "SendResult", "Incoming", "KVHandle",
           "PushTarget", "PushedHandle", "ShmHandle", "DiskHandle", "TcpHandle", "NixlHandle", "leaked_shm_segments",
           "leaked_kv_folders"]
