"""NIXL, NVIDIA's transfer library under vLLM's NixlConnector, SGLang and Dynamo (1 copy).

Each worker is one NIXL agent that registers its whole KV pool once, at start. The prefill worker
sends nothing: it keeps the prompt's blocks and hands over where they are (its agent's metadata and
the blocks' addresses, riding the router's hand-off message). The decode worker reserves blocks for
the request and reads the prefill worker's blocks straight into them: no staging buffer, no import
copy. UCX picks the route: shared memory or CMA on one host, RDMA between hosts, CUDA IPC or NVLink
between GPUs, with the same code. When the read completes, NIXL notifies the prefill agent, which
frees its blocks; blocks that no reader claims within HOLD_TIMEOUT_S are freed anyway.
"""
from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass
from functools import cache

from ...core.kv_cache import PagedKVCache
from .base import SendResult, TransferError, Transport

HOLD_TIMEOUT_S = 30.0   # a prefill worker frees sent blocks that no reader claimed within this
PROGRESS_S = 0.002      # how often this agent's own thread lets UCX progress (reads of our blocks, notifications)
READ_TIMEOUT_S = 30.0   # a decode worker gives up on a read that has not completed within this
DONE, DROP = b"done:", b"drop:"   # notification prefixes: the reader has the KV / will never read it

_local: NixlTransport | None = None   # this process's agent, if any: lets a handle's discard() notify


@cache
def unavailable_reason() -> str | None:
    """Why NIXL cannot load here (None when it can): the other transports work regardless."""
    try:
        _api()
    except Exception as exc:  # an ImportError, or a shared library that does not load
        return f"{type(exc).__name__}: {exc}"
    return None


def _api():
    try:
        from nixl import _api
    except ImportError:
        from nixl_cu12 import _api   # the CUDA 12 build alone, without the meta-package
    return _api


@dataclass(frozen=True)
class NixlHandle:
    """Where one prompt's KV lies in the prefill worker's pool, and how to reach that worker."""
    agent: str
    metadata: bytes        # the prefill agent's NIXL metadata (its UCX address and registered memory)
    key: str
    key_addr: int          # base addresses of the prefill pool's K and V tensors
    value_addr: int
    layers: int
    layer_bytes: int       # one layer of the prefill pool, in bytes
    token_bytes: int       # one token of one layer (heads x head_dim x element size)
    block_size: int
    blocks: tuple[int, ...]
    num_tokens: int
    mem_type: str          # "DRAM" or "VRAM"
    device_id: int

    def discard(self) -> None:
        """In a process with an agent (a decode worker), tell the sender at once; elsewhere the
        sender frees the blocks after HOLD_TIMEOUT_S."""
        if _local is not None:
            _local.notify(self, DROP)


@dataclass
class _Held:
    blocks: list[int]
    until: float


class PendingRead:
    """One read in flight on the decode side; poll() until it says done."""

    def __init__(self, transport: NixlTransport, handle: NixlHandle, xfer):
        self.transport, self.handle, self.xfer = transport, handle, xfer
        self.deadline = time.monotonic() + READ_TIMEOUT_S

    def poll(self) -> bool:
        state = self.transport.agent.check_xfer_state(self.xfer)
        if state == "DONE":
            self.close()
            return True
        if state == "ERR":
            self.cancel()
            raise TransferError(f"NIXL read from {self.handle.agent} ended in error")
        if time.monotonic() > self.deadline:
            self.cancel()
            raise TransferError(f"NIXL read from {self.handle.agent} did not complete in {READ_TIMEOUT_S:.0f} s")
        return False

    def close(self) -> None:
        if self.xfer is not None:
            self.transport.agent.release_xfer_handle(self.xfer)
            self.xfer = None

    def cancel(self) -> None:
        """Abandon the read (an abort, a failure): the sender is told, so it frees its blocks."""
        self.close()
        self.transport.notify(self.handle, DROP)


class NixlTransport(Transport):
    name, copies = "nixl", 1
    reads_into_blocks = True

    def __init__(self, settings=None):
        super().__init__(settings)
        reason = unavailable_reason()
        if reason:
            raise TransferError(f"the nixl transport is unavailable here ({reason}); use shm, disk or tcp")
        api = _api()
        self.name_here = f"pdlab-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # NIXL's own progress thread polls without pause (a whole core, which the engine needs on a
        # CPU); ours sleeps PROGRESS_S between polls (about 3% of a core), so a peer's read of our
        # blocks progresses even while a long prefill step holds the worker's loop.
        config = api.nixl_agent_config(enable_prog_thread=False, backends=["UCX"],
                                       sync_mode=api.nixl_thread_sync_t.NIXL_THREAD_SYNC_STRICT)
        self.agent = api.nixl_agent(self.name_here, config)
        self.cache: PagedKVCache | None = None
        self.held: dict[str, _Held] = {}
        self.remotes: dict[str, str] = {}   # prefill agent name -> the name NIXL knows it by
        self._arrived: list[bytes] = []     # notifications the progress thread collected
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._progress = threading.Thread(target=self._progress_loop, name="nixl-progress", daemon=True)
        self._progress.start()
        global _local
        _local = self

    def _progress_loop(self) -> None:
        while not self._stop.wait(PROGRESS_S):
            arrived = [m for messages in self.agent.get_new_notifs().values() for m in messages]
            if arrived:
                with self._lock:
                    self._arrived += arrived

    def attach(self, cache: PagedKVCache) -> None:
        self.cache = cache
        self._registered = self.agent.register_memory([cache.key, cache.value])
        device = cache.key.device
        self.mem_type = "VRAM" if device.type == "cuda" else "DRAM"
        self.device_id = device.index or 0
        self.metadata = self.agent.get_agent_metadata()

    # ---- prefill side ----

    def send(self, cache, block_table, num_tokens):
        """Take the request's blocks (the engine's table is emptied, so dropping the request frees
        nothing) and hand over their addresses."""
        start = time.perf_counter()
        key = uuid.uuid4().hex
        blocks = list(block_table)
        block_table.clear()
        self.held[key] = _Held(blocks, time.monotonic() + HOLD_TIMEOUT_S)
        layers, slots, heads, dim = cache.key.shape
        token_bytes = heads * dim * cache.key.element_size()
        handle = NixlHandle(self.name_here, self.metadata, key, cache.key.data_ptr(), cache.value.data_ptr(),
                            layers, slots * token_bytes, token_bytes, cache.block_size, tuple(blocks), num_tokens,
                            self.mem_type, self.device_id)
        return SendResult(handle, num_tokens * cache.bytes_per_token, start, time.perf_counter() - start)

    def poll(self) -> bool:
        """Free the blocks whose reader is done (or will never read), and those held too long."""
        freed = False
        with self._lock:
            arrived, self._arrived = self._arrived, []
        for message in arrived:
            if message.startswith((DONE, DROP)):
                freed |= self._free(message[len(DONE):].decode())
        now = time.monotonic()
        for key in [k for k, held in self.held.items() if held.until < now]:
            freed |= self._free(key)
        return freed

    def _free(self, key: str) -> bool:
        held = self.held.pop(key, None)
        if held and self.cache is not None:
            self.cache.release(held.blocks)
        return held is not None

    # ---- decode side ----

    def start_read(self, handle: NixlHandle, cache: PagedKVCache, block_table: list[int]) -> PendingRead:
        """Read the handle's blocks into `block_table` (reserved by the caller), layer by layer, K and V."""
        layers, _, heads, dim = cache.key.shape
        if (handle.layers, handle.token_bytes, handle.block_size) != (layers, heads * dim * cache.key.element_size(),
                                                                      cache.block_size):
            self.notify(handle, DROP)
            raise TransferError("the prefill and decode KV pools differ in layout (layers, heads, dtype or block "
                                "size); both must run the same model and settings")
        try:
            remote = self._remote(handle)
            local_descs, remote_descs = _descriptors(handle, cache, block_table)
            xfer = self.agent.initialize_xfer("READ", self.agent.get_xfer_descs(local_descs, self.mem_type),
                                              self.agent.get_xfer_descs(remote_descs, handle.mem_type), remote,
                                              DONE + handle.key.encode())
            if self.agent.transfer(xfer) == "ERR":
                self.agent.release_xfer_handle(xfer)
                raise TransferError("NIXL refused to post the read")
        except TransferError:
            self.notify(handle, DROP)
            raise
        except Exception as exc:   # NIXL raises its own errors for bad descriptors or an unknown agent
            self.notify(handle, DROP)
            raise TransferError(f"NIXL read from {handle.agent} could not start: {exc}") from exc
        return PendingRead(self, handle, xfer)

    def _remote(self, handle: NixlHandle) -> str:
        if handle.agent not in self.remotes:
            self.remotes[handle.agent] = self.agent.add_remote_agent(handle.metadata)
        return self.remotes[handle.agent]

    def notify(self, handle: NixlHandle, prefix: bytes) -> None:
        try:
            self.agent.send_notif(self._remote(handle), prefix + handle.key.encode())
        except Exception:
            pass   # the sender is gone, and its blocks with it; or it frees them after HOLD_TIMEOUT_S

    def open(self, handle, dtype):
        raise TransferError("the nixl transport reads into the decode worker's blocks: use start_read()")

    def close(self) -> None:
        global _local
        if _local is self:
            _local = None
        self._stop.set()
        self._progress.join(5)
        if self.cache is not None:
            self.agent.deregister_memory(self._registered)
        self.held.clear()


def _descriptors(handle: NixlHandle, cache: PagedKVCache, block_table: list[int]):
    """(address, length, device) pairs, local and remote, one per run of blocks that are consecutive
    on both sides, per layer, for K and for V."""
    needed = -(-handle.num_tokens // handle.block_size)
    if len(handle.blocks) < needed or len(block_table) < needed:
        raise TransferError(f"{handle.num_tokens} tokens need {needed} blocks on both sides")
    runs = []   # (first block index, number of blocks)
    for i in range(needed):
        if runs and handle.blocks[i] == handle.blocks[i - 1] + 1 and block_table[i] == block_table[i - 1] + 1:
            runs[-1][1] += 1
        else:
            runs.append([i, 1])
    block_bytes = handle.block_size * handle.token_bytes
    local_layer_bytes = cache.key.shape[1] * handle.token_bytes   # the two pools may differ in size
    last_tokens = handle.num_tokens - (needed - 1) * handle.block_size
    local, remote = [], []
    device = cache.key.device.index or 0
    for local_base, remote_base in ((cache.key.data_ptr(), handle.key_addr),
                                    (cache.value.data_ptr(), handle.value_addr)):
        for layer in range(handle.layers):
            for first, count in runs:
                unused = (handle.block_size - last_tokens) * handle.token_bytes if first + count == needed else 0
                length = count * block_bytes - unused
                local.append((local_base + layer * local_layer_bytes + block_table[first] * block_bytes, length,
                              device))
                remote.append((remote_base + layer * handle.layer_bytes + handle.blocks[first] * block_bytes, length,
                               handle.device_id))
    return local, remote
