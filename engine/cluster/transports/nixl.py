"""NIXL, NVIDIA's transfer library under vLLM's NixlConnector, SGLang and Dynamo (1 copy).

Each worker is one NIXL agent that registers its whole KV pool once, at start. UCX picks the route:
shared memory or CMA on one host, RDMA between hosts, CUDA IPC or NVLink between GPUs, with the same
code. A prompt's KV goes one of two ways, both straight from pool to pool with no staging buffer:

push (the usual way): when a prompt arrives, the router asks a decode worker to reserve blocks for
    it and sends the prompt to the prefill worker with their addresses (a NixlTarget); the prefill
    worker WRITEs each layer's KV into them as soon as the layer is computed, while the later layers
    still compute (Mooncake overlaps its transfer with the prefill layer by layer the same way; vLLM's
    NixlConnector instead READs after the prefill, as the pull below does). When the
    prompt is done, only the last layer's write and a "ready" notification are left: the transfer
    hides behind the prefill.
pull (when the decode worker had no room to reserve): the prefill worker keeps the prompt's blocks
    and hands over where they are; the decode worker READs them into its own. The read's
    notification tells the prefill worker to free its blocks; blocks that no reader claims within
    HOLD_TIMEOUT_S are freed anyway.
"""
from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from functools import cache

import torch

from ...core.kv_cache import PagedKVCache
from .base import SendResult, TransferError, slot_runs
from .push import Push, PushedHandle, PushTransport, ready_notice, stop_notice

HOLD_TIMEOUT_S = 30.0     # a prefill worker frees pulled blocks that no reader claimed within this
PROGRESS_S = 0.002        # how often this agent's own thread lets UCX progress (transfers, notifications)
READ_TIMEOUT_S = 30.0     # a decode worker gives up on a read after this
DONE, DROP = b"done:", b"drop:"     # reader -> sender (pull): the reader has the KV / will never read it

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
class PoolAddress:
    """Where one worker's registered KV pool lies, and how to reach its agent."""
    agent: str
    metadata: bytes        # the agent's NIXL metadata (its UCX address and registered memory)
    key_addr: int          # base addresses of the pool's K and V tensors
    value_addr: int
    layers: int
    layer_bytes: int       # one layer of the pool, in bytes
    token_bytes: int       # one token of one layer (heads x head_dim x element size)
    block_size: int
    mem_type: str          # "DRAM" or "VRAM"
    device_id: int

    def check_matches(self, other: PoolAddress) -> None:
        if (self.layers, self.token_bytes, self.block_size) != (other.layers, other.token_bytes, other.block_size):
            raise TransferError("the prefill and decode KV pools differ in layout (layers, heads, dtype or block "
                                "size); both must run the same model and settings")


@dataclass(frozen=True)
class NixlHandle:
    """Pull: where one prompt's KV lies in the prefill worker's pool."""
    pool: PoolAddress
    key: str
    blocks: tuple[int, ...]
    num_tokens: int

    def discard(self) -> None:
        """In a process with an agent (a decode worker), tell the sender at once; elsewhere the
        sender frees the blocks after HOLD_TIMEOUT_S."""
        if _local is not None:
            _local.notify(self.pool, DROP + self.key.encode())


@dataclass(frozen=True)
class NixlTarget:
    """Push: the blocks a decode worker reserved for one prompt."""
    pool: PoolAddress
    blocks: tuple[int, ...]


@dataclass
class _Held:
    blocks: list[int]
    until: float


@dataclass
class _NixlPush(Push):
    remote: str = ""                     # the decode agent, as NIXL knows it
    xfers: list = field(default_factory=list)   # writes in flight
    blocks: list[int] | None = None      # taken at the hand-off, freed when the writes end
    ready_posted: bool = False           # the last write, which carries the "ready" notification
    runs: tuple = ((), ())               # ((start, end), runs) of the current step, computed once per step


class PendingRead:
    """A pull's read into the decode worker's blocks."""
    def __init__(self, transport: NixlTransport, handle: NixlHandle, xfer):
        self.transport, self.handle, self.xfer = transport, handle, xfer
        self.deadline = time.monotonic() + READ_TIMEOUT_S
        self.finished_at = 0.0

    def poll(self) -> bool:
        state = self.transport.agent.check_xfer_state(self.xfer)
        if state == "DONE":
            self.finished_at = time.perf_counter()
            self._release()
            return True
        if state == "ERR":
            self.cancel()
            raise TransferError(f"NIXL read from {self.handle.pool.agent} ended in error")
        if time.monotonic() > self.deadline:
            self.cancel()
            raise TransferError(f"NIXL read from {self.handle.pool.agent} did not complete in {READ_TIMEOUT_S:.0f} s")
        return False

    def _release(self) -> None:
        if self.xfer is not None:
            self.transport.agent.release_xfer_handle(self.xfer)
            self.xfer = None

    def cancel(self) -> None:
        """The sender is told, so it frees its blocks."""
        self._release()
        self.transport.notify(self.handle.pool, DROP + self.handle.key.encode())


class NixlTransport(PushTransport):
    name, copies = "nixl", 1

    def __init__(self, settings=None):
        super().__init__(settings)
        reason = unavailable_reason()
        if reason:
            raise TransferError(f"the nixl transport is unavailable here ({reason}); use shm, disk or tcp")
        api = _api()
        self.name_here = f"pdlab-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # NIXL's own progress thread polls without pause (a whole core, which the engine needs on a
        # CPU); ours sleeps PROGRESS_S between polls (about 3% of a core), so transfers progress and
        # notifications arrive even while a long prefill step holds the worker's loop.
        config = api.nixl_agent_config(enable_prog_thread=False, backends=["UCX"],
                                       sync_mode=api.nixl_thread_sync_t.NIXL_THREAD_SYNC_STRICT)
        self.agent = api.nixl_agent(self.name_here, config)
        self.held: dict[str, _Held] = {}         # pull, prefill side: blocks waiting for their reader
        self.remotes: dict[str, str] = {}        # agent name -> the name NIXL knows it by
        self._arrived: list[bytes] = []          # pull notifications the progress thread collected
        self._freeable: list[int] = []           # pushed blocks whose writes ended
        self._stop = threading.Event()
        self._progress = threading.Thread(target=self._progress_loop, name="nixl-progress", daemon=True)
        self._progress.start()
        global _local
        _local = self

    def _progress_loop(self) -> None:
        while not self._stop.wait(PROGRESS_S):
            for message in (m for messages in self.agent.get_new_notifs().values() for m in messages):
                self._note(message)
            self._progress_pushes()

    def _note(self, message: bytes) -> None:
        if not super()._note(message):   # a push's final notice, else a pull's
            with self._lock:
                self._arrived.append(message)

    def attach(self, cache: PagedKVCache, receives_pushes: bool = False) -> None:
        super().attach(cache)   # registered either way: a pull reads from the sender's pool
        self._registered = self.agent.register_memory([cache.key, cache.value])
        device = cache.key.device
        layers, slots, heads, dim = cache.key.shape
        token_bytes = heads * dim * cache.key.element_size()
        self.address = PoolAddress(self.name_here, self.agent.get_agent_metadata(), cache.key.data_ptr(),
                                   cache.value.data_ptr(), layers, slots * token_bytes, token_bytes,
                                   cache.block_size, "VRAM" if device.type == "cuda" else "DRAM", device.index or 0)

    def poll(self) -> bool:
        """Free the blocks whose reader is done (or will never read), those held too long, and
        those whose writes ended."""
        with self._lock:
            arrived, self._arrived = self._arrived, []
            freeable, self._freeable = self._freeable, []
        self._expire_notices()
        freed = bool(freeable)
        if freeable and self.cache is not None:
            self.cache.release(freeable)
        for message in arrived:
            if message.startswith((DONE, DROP)):
                freed |= self._free_held(message[len(DONE):].decode())
        now = time.monotonic()
        for key in [k for k, held in self.held.items() if held.until < now]:
            freed |= self._free_held(key)
        return freed

    def _free_held(self, key: str) -> bool:
        held = self.held.pop(key, None)
        if held and self.cache is not None:
            self.cache.release(held.blocks)
        return held is not None

    def _remote(self, pool: PoolAddress) -> str:
        if pool.agent not in self.remotes:
            self.remotes[pool.agent] = self.agent.add_remote_agent(pool.metadata)
        return self.remotes[pool.agent]

    def notify(self, pool: PoolAddress, message: bytes) -> None:
        try:
            self.agent.send_notif(self._remote(pool), message)
        except Exception:
            pass   # the peer is gone; or it frees what it holds after its own timeout

    # ---- push, prefill side ----

    def set_target(self, request_id: str, target: NixlTarget) -> None:
        try:
            self.address.check_matches(target.pool)
            push = _NixlPush(target, remote=self._remote(target.pool))
        except Exception as exc:   # a layout mismatch, or metadata NIXL refuses
            push = _NixlPush(target, error=str(exc))
        with self._lock:
            self.outgoing[request_id] = push

    def _before_writes(self) -> None:
        if self.cache.key.is_cuda:   # the layer's KV write is queued on the GPU, not done yet
            torch.cuda.current_stream(self.cache.key.device).synchronize()

    def _sealed(self, request_id, push: _NixlPush, block_table, num_tokens, started) -> SendResult:
        """Take the prompt's blocks (freed when the writes end); the progress thread says "ready" after
        the last write completes."""
        with self._lock:
            push.blocks, push.ended = list(block_table), True
        block_table.clear()
        return SendResult(PushedHandle(request_id, self.name_here), num_tokens * self.cache.bytes_per_token, started,
                          time.perf_counter() - started)

    def drop(self, request_id: str) -> None:
        """Once its writes in flight end, the progress thread tells the reservation that no more will come."""
        with self._lock:
            push = self.outgoing.get(request_id)
            if push is not None:
                push.ended = True
                push.error = push.error or "the request ended before its hand-off"

    def _post_notice(self, target: NixlTarget, message: bytes) -> None:
        self.notify(target.pool, message)

    def _write(self, push: _NixlPush, layers: range, start: int, end: int, table: list[int]) -> None:
        try:
            if end > len(push.target.blocks) * self.address.block_size:
                raise TransferError(f"the decode worker reserved room for {len(push.target.blocks)} blocks, "
                                    f"the prompt needs more")
            if push.runs[0] != (start, end):
                push.runs = ((start, end), slot_runs(table, push.target.blocks, self.address.block_size, start, end))
            local, remote = _descriptors(push.runs[1], layers, self.address, push.target.pool)
            xfer = self.agent.initialize_xfer("WRITE", self.agent.get_xfer_descs(local, self.address.mem_type),
                                              self.agent.get_xfer_descs(remote, push.target.pool.mem_type),
                                              push.remote)
            if self.agent.transfer(xfer) == "ERR":
                self.agent.release_xfer_handle(xfer)
                raise TransferError("NIXL refused to post the write")
        except Exception as exc:   # NIXL raises its own errors for bad descriptors or a dead agent
            push.error = push.error or f"NIXL write to {push.target.pool.agent} failed: {exc}"
            return
        with self._lock:
            push.xfers.append(xfer)

    def _progress_pushes(self) -> None:
        """On the progress thread: retire finished writes; when a pushed prompt's writes have all
        ended, post the one that says "ready" (or say "stop"), then let the loop free the blocks."""
        with self._lock:
            pushes = list(self.outgoing.items())
        for request_id, push in pushes:
            for xfer in list(push.xfers):
                state = self.agent.check_xfer_state(xfer)
                if state == "PROC":
                    continue
                if state == "ERR":
                    push.error = push.error or f"a NIXL write to {push.target.pool.agent} ended in error"
                self.agent.release_xfer_handle(xfer)
                with self._lock:
                    push.xfers.remove(xfer)
            if not push.ended or push.xfers:
                continue
            if not push.error and not push.ready_posted:
                self._post_ready(push, request_id)
                continue
            with self._lock:
                del self.outgoing[request_id]
                self._freeable += push.blocks or []
            if push.error:
                self.notify(push.target.pool, stop_notice(request_id, push.error))

    def _post_ready(self, push: _NixlPush, request_id: str) -> None:
        """The "ready" notification rides on one last small write (the prompt's first token of layer 0,
        again), posted after every other write completed: NIXL delivers a transfer's notification
        after that transfer's data."""
        push.ready_posted = True
        runs = slot_runs(push.blocks or [], push.target.blocks, self.address.block_size, 0, 1)
        local, remote = _descriptors(runs, range(1), self.address, push.target.pool)
        try:
            xfer = self.agent.initialize_xfer("WRITE", self.agent.get_xfer_descs(local[:1], self.address.mem_type),
                                              self.agent.get_xfer_descs(remote[:1], push.target.pool.mem_type),
                                              push.remote, ready_notice(request_id))
            if self.agent.transfer(xfer) == "ERR":
                self.agent.release_xfer_handle(xfer)
                raise TransferError("NIXL refused to post it")
        except Exception as exc:
            push.error = f"the last write failed: {exc}"
            return
        with self._lock:
            push.xfers.append(xfer)

    # ---- push, decode side ----

    def _target(self, block_table: list[int]) -> NixlTarget:
        return NixlTarget(self.address, tuple(block_table))

    # ---- pull, prefill side ----

    def send(self, cache, block_table, num_tokens):
        """Take the request's blocks (the engine's table is emptied, so dropping the request frees
        nothing) and hand over their addresses."""
        start = time.perf_counter()
        key = uuid.uuid4().hex
        blocks = list(block_table)
        block_table.clear()
        self.held[key] = _Held(blocks, time.monotonic() + HOLD_TIMEOUT_S)
        return SendResult(NixlHandle(self.address, key, tuple(blocks), num_tokens),
                          num_tokens * cache.bytes_per_token, start, time.perf_counter() - start)

    # ---- decode side: a pull's read, or a push's arrival ----

    def receive(self, handle, block_table: list[int]):
        """A push's arrival, or a pull: a READ straight into `block_table`."""
        if isinstance(handle, PushedHandle):
            return super().receive(handle, block_table)
        try:
            self.address.check_matches(handle.pool)
            remote = self._remote(handle.pool)
            runs = slot_runs(block_table, handle.blocks, self.cache.block_size, 0, handle.num_tokens)
            local_descs, remote_descs = _descriptors(runs, range(self.address.layers), self.address, handle.pool)
            xfer = self.agent.initialize_xfer("READ", self.agent.get_xfer_descs(local_descs, self.address.mem_type),
                                              self.agent.get_xfer_descs(remote_descs, handle.pool.mem_type), remote,
                                              DONE + handle.key.encode())
            if self.agent.transfer(xfer) == "ERR":
                self.agent.release_xfer_handle(xfer)
                raise TransferError("NIXL refused to post the read")
        except TransferError:
            self.notify(handle.pool, DROP + handle.key.encode())
            raise
        except Exception as exc:   # NIXL raises its own errors for bad descriptors or an unknown agent
            self.notify(handle.pool, DROP + handle.key.encode())
            raise TransferError(f"NIXL read from {handle.pool.agent} could not start: {exc}") from exc
        return PendingRead(self, handle, xfer)

    def close(self) -> None:
        global _local
        if _local is self:
            _local = None
        self._stop.set()
        self._progress.join(5)
        if self.cache is not None:
            self.agent.deregister_memory(self._registered)
        self.held.clear()


def _descriptors(runs, layers: range, local: PoolAddress, remote: PoolAddress):
    """(address, length, device) lists, local and remote: each run, for each layer, in K and in V."""
    here, there = [], []
    for local_base, remote_base in ((local.key_addr, remote.key_addr), (local.value_addr, remote.value_addr)):
        for layer in layers:
            for local_slot, remote_slot, tokens in runs:
                length = tokens * local.token_bytes
                here.append((local_base + layer * local.layer_bytes + local_slot * local.token_bytes, length,
                             local.device_id))
                there.append((remote_base + layer * remote.layer_bytes + remote_slot * remote.token_bytes, length,
                              remote.device_id))
    return here, there
