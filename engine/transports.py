"""Moving one request's KV cache from a prefill worker to a decode worker.

Each transport stands for a route in a real cluster and counts the copies of the KV bytes between
the two pools:
  shm   shared memory: the prefill pool gathers straight into a segment the decode pool reads
        (2 copies; the "minimum copies" route, like CUDA IPC / NVLink between GPUs of one node)
  disk  safetensors files in a folder, optional fsync (the NVMe/SSD or 3FS route; 4 copies)
  tcp   a loopback socket, pulled by the decode side as RDMA reads are (the network route; 4 copies)
A handle is a small picklable dict that travels through the router; the payload does not.
"""
from __future__ import annotations

import os
import socket
import socketserver
import struct
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import resource_tracker, shared_memory
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .kv_cache import KVPayload, PagedKVCache

SHM_PREFIX = "pdlab-kv-"
TRANSPORTS = ("shm", "disk", "tcp")


class TransferError(RuntimeError):
    pass


@dataclass
class SendResult:
    handle: dict
    nbytes: int
    started: float
    seconds: float


def _payload_shape(cache: PagedKVCache, num_tokens: int) -> tuple[int, ...]:
    layers, _, heads, dim = cache.key.shape
    return (layers, num_tokens, heads, dim)


@dataclass
class Received:
    """A payload on the receiving side, readable until close() (which frees what the handle held)."""
    payload: KVPayload | None
    release: Callable[[], None] = lambda: None

    def close(self) -> None:
        self.payload = None  # drop the tensor views first: a shared-memory mapping can't close under them
        self.release()


class Transport:
    name = ""
    copies = 0

    def send(self, cache: PagedKVCache, block_table: list[int], num_tokens: int) -> SendResult:
        raise NotImplementedError

    def open(self, handle: dict, dtype: torch.dtype) -> Received:
        raise NotImplementedError

    @staticmethod
    def discard(handle: dict) -> None:
        """Free whatever a handle holds, for a transfer that will never be received."""

    def close(self) -> None:
        pass


# ---- shared memory -----------------------------------------------------------------------------

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
        shape = _payload_shape(cache, num_tokens)
        half = cache.key.element_size() * int(torch.Size(shape).numel())
        shm = shared_memory.SharedMemory(name=SHM_PREFIX + uuid.uuid4().hex[:16], create=True, size=2 * half)
        _untrack(shm)
        flat = torch.frombuffer(shm.buf, dtype=cache.key.dtype)
        payload = _split(flat, shape)
        cache.export_into(block_table, num_tokens, payload.key, payload.value)
        del flat, payload  # release the buffer views before closing the mapping
        shm.close()
        handle = {"transport": self.name, "name": shm.name, "shape": shape, "dtype": str(cache.key.dtype)}
        return SendResult(handle, 2 * half, start, time.perf_counter() - start)

    def open(self, handle, dtype):
        try:
            shm = shared_memory.SharedMemory(name=handle["name"])
        except FileNotFoundError as exc:
            raise TransferError(f"shared-memory segment {handle['name']} is gone") from exc

        def release():
            shm.close()
            shm.unlink()
        return Received(_split(torch.frombuffer(shm.buf, dtype=dtype), handle["shape"]), release)

    @staticmethod
    def discard(handle):
        try:
            shm = shared_memory.SharedMemory(name=handle["name"])
        except FileNotFoundError:
            return
        shm.close()
        shm.unlink()


def leaked_shm_segments() -> list[str]:
    return sorted(p.name for p in Path("/dev/shm").glob(SHM_PREFIX + "*"))


# ---- files -------------------------------------------------------------------------------------

class DiskTransport(Transport):
    name, copies = "disk", 4

    def __init__(self, folder: str | None = None, fsync: bool = False):
        self.folder = Path(folder or Path(tempfile.gettempdir()) / "pdlab-kv")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync

    def send(self, cache, block_table, num_tokens):
        start = time.perf_counter()
        payload = cache.export(block_table, num_tokens)
        path = self.folder / f"{uuid.uuid4().hex}.safetensors"
        save_file({"key": payload.key, "value": payload.value}, str(path))
        if self.fsync:
            with open(path, "rb+") as f:
                os.fsync(f.fileno())
        handle = {"transport": self.name, "path": str(path)}
        return SendResult(handle, payload.nbytes, start, time.perf_counter() - start)

    def open(self, handle, dtype):
        path = Path(handle["path"])
        try:
            tensors = load_file(str(path))
        except FileNotFoundError as exc:
            raise TransferError(f"KV file {path} is gone") from exc
        finally:
            path.unlink(missing_ok=True)
        return Received(KVPayload(tensors["key"], tensors["value"]))

    @staticmethod
    def discard(handle):
        Path(handle["path"]).unlink(missing_ok=True)


# ---- TCP ---------------------------------------------------------------------------------------

class TcpTransport(Transport):
    """The sender keeps each payload until the receiver pulls it (or the router drops it)."""
    name, copies = "tcp", 4

    def __init__(self, host: str = "127.0.0.1", timeout: float = 30.0):
        self.timeout = timeout
        self._payloads: dict[str, bytes] = {}
        self._lock = threading.Lock()
        transport = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                verb, key = self.rfile.readline().decode().split()
                with transport._lock:
                    data = transport._payloads.pop(key, None)
                if verb == "GET":
                    self.wfile.write(struct.pack("!q", -1 if data is None else len(data)))
                    if data is not None:
                        self.wfile.write(data)

        self._server = socketserver.ThreadingTCPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self.address = self._server.server_address
        threading.Thread(target=self._server.serve_forever, name="kv-tcp", daemon=True).start()

    def send(self, cache, block_table, num_tokens):
        start = time.perf_counter()
        payload = cache.export(block_table, num_tokens)
        key = uuid.uuid4().hex
        data = torch.cat([payload.key.reshape(-1), payload.value.reshape(-1)]).view(torch.uint8).numpy().tobytes()
        with self._lock:
            self._payloads[key] = data
        handle = {"transport": self.name, "address": list(self.address), "key": key,
                  "shape": _payload_shape(cache, num_tokens)}
        return SendResult(handle, len(data), start, time.perf_counter() - start)

    @staticmethod
    def _request(handle: dict, verb: str, timeout: float) -> socket.socket:
        sock = socket.create_connection(tuple(handle["address"]), timeout=timeout)
        sock.sendall(f"{verb} {handle['key']}\n".encode())
        return sock

    def open(self, handle, dtype):
        try:
            with self._request(handle, "GET", self.timeout) as sock:
                f = sock.makefile("rb")
                (size,) = struct.unpack("!q", f.read(8))
                if size < 0:
                    raise TransferError(f"sender no longer holds KV {handle['key']}")
                data = bytearray(size)
                if f.readinto(data) != size:
                    raise TransferError("connection closed before the whole KV arrived")
        except OSError as exc:
            raise TransferError(f"KV fetch from {handle['address']} failed: {exc}") from exc
        return Received(_split(torch.frombuffer(data, dtype=dtype), handle["shape"]))

    @staticmethod
    def discard(handle):
        try:
            with TcpTransport._request(handle, "DROP", timeout=5.0):
                pass
        except OSError:
            pass  # the sender is gone, and its payloads with it

    def close(self):
        self._server.shutdown()
        self._server.server_close()


def _split(flat: torch.Tensor, shape) -> KVPayload:
    half = flat.numel() // 2
    return KVPayload(flat[:half].view(shape), flat[half:].view(shape))


def discard(handle: dict) -> None:
    """Free a handle's payload from any process (the router does this for abandoned transfers)."""
    {"shm": SharedMemoryTransport, "disk": DiskTransport, "tcp": TcpTransport}[handle["transport"]].discard(handle)


TRANSPORT_COPIES = {t.name: t.copies for t in (SharedMemoryTransport, DiskTransport, TcpTransport)}


def make_transport(name: str, disk_folder: str | None = None, fsync: bool = False) -> Transport:
    if name == "shm":
        return SharedMemoryTransport()
    if name == "disk":
        return DiskTransport(disk_folder, fsync)
    if name == "tcp":
        return TcpTransport()
    raise ValueError(f"transport must be one of {TRANSPORTS}, got {name!r}")
