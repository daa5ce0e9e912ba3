"""What every KV transport does, and the one way a decode worker waits for a prompt's KV.

`Transport` sends one request's KV from a prefill pool after its prefill (a pull: the decode side
fetches it) and receives it on the decode side. `PushTransport` (push.py) can also write the KV into
blocks a decode worker reserved, layer by layer while the prompt computes.

A send returns a handle: a small frozen, picklable record that travels through the router (the
payload does not) and knows how to free what it holds if the transfer is abandoned. A receive
returns an `Incoming`: whatever the route, the decode worker polls it between its steps.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol

import torch

from ...core.kv_cache import KVPayload, PagedKVCache

if TYPE_CHECKING:
    from . import TransportSettings


PUSH_COPIES = 1               # a push writes from pool to pool
LAYERS_PER_POLL = 6           # a payload is loaded this many layers per poll, so an import never stalls
                              # the decode steps between polls for long


class TransferError(RuntimeError):
    pass


class KVHandle(Protocol):
    def discard(self) -> None:
        """Free whatever the handle holds, from any process, for a transfer that will never be received."""


class Incoming(Protocol):
    """One prompt's KV on its way into the decode worker's blocks, whatever the route."""
    finished_at: float        # when the KV was in place (perf_counter), once poll() said True

    def poll(self) -> bool:
        """Move it along; True once the KV is in place. Raises TransferError if it failed (having freed
        what it held)."""

    def cancel(self) -> None:
        """Abandon it (an abort, a stop) and free what it holds; harmless if already done."""


@dataclass(frozen=True)
class SendResult:
    handle: KVHandle
    nbytes: int
    started: float
    seconds: float
    writing_seconds: float = 0.0   # a push: time its writes took inside the prefill, before `started`


@dataclass
class Received:
    """A payload on the receiving side, readable until close() (which frees what the handle held)."""
    payload: KVPayload | None
    release: Callable[[], None] = lambda: None

    def ready(self) -> bool:
        """Whether the payload is in (a transport may still be pulling it); raises TransferError if the
        pull failed."""
        return True

    def close(self) -> None:
        self.payload = None  # drop the tensor views first: a shared-memory mapping can't close under them
        release, self.release = self.release, lambda: None   # at most once
        release()


class PayloadLoad:
    """A received payload copied into the request's blocks, LAYERS_PER_POLL layers per poll."""

    def __init__(self, received: Received, cache: PagedKVCache, block_table: list[int]):
        self.received, self.cache, self.block_table = received, cache, block_table
        self.next_layer = 0
        self.finished_at = 0.0

    def poll(self) -> bool:
        try:
            if not self.received.ready():   # still arriving
                return False
        except TransferError:
            self.cancel()
            raise
        layers = slice(self.next_layer, self.next_layer + LAYERS_PER_POLL)
        self.cache.load(self.block_table, self.received.payload, layers)
        self.next_layer = layers.stop
        if self.next_layer < self.cache.num_layers:
            return False
        self.received.close()
        self.finished_at = time.perf_counter()
        return True

    def cancel(self) -> None:
        self.received.close()


class Transport:
    name: ClassVar[str]
    copies: ClassVar[int]   # copies of the KV bytes between the two pools on this route
    pushes: ClassVar[bool] = False   # a PushTransport: can write into a decode worker's reserved blocks

    def __init__(self, settings: TransportSettings | None = None):
        """`settings` carries the options some transports have (the disk's folder and fsync)."""
        self.cache: PagedKVCache | None = None

    def attach(self, cache: PagedKVCache, receives_pushes: bool = False) -> None:
        """The worker's KV pool, once, before any transfer (a transport may register it).
        `receives_pushes`: other workers will write into it (a decode worker's)."""
        self.cache = cache

    def poll(self) -> bool:
        """Called every worker iteration: a transport may finish its own bookkeeping here. True if
        that changed the worker's KV pool (blocks freed)."""
        return False

    def send(self, cache: PagedKVCache, block_table: list[int], num_tokens: int) -> SendResult:
        raise NotImplementedError

    def receive(self, handle: KVHandle, block_table: list[int]) -> Incoming:
        """Start bringing a handed-off prompt's KV into `block_table` of the attached pool; raises
        TransferError if it cannot start."""
        return PayloadLoad(self.open(handle, self.cache.key.dtype), self.cache, block_table)

    def open(self, handle: KVHandle, dtype: torch.dtype) -> Received:
        """The payload behind a handle (the transports that receive one)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


def payload_shape(cache: PagedKVCache, num_tokens: int) -> tuple[int, ...]:
    layers, _, heads, dim = cache.key.shape
    return (layers, num_tokens, heads, dim)


def split_payload(flat: torch.Tensor, shape: tuple[int, ...]) -> KVPayload:
    """One flat buffer holding K then V, viewed as the two tensors."""
    half = flat.numel() // 2
    return KVPayload(flat[:half].view(shape), flat[half:].view(shape))


def slot_runs(local_table, remote_table, block_size: int, start: int, end: int) -> list[list[int]]:
    """[local slot, remote slot, tokens] for token positions [start, end) of one prompt, one entry per
    run that is consecutive on both sides (blocks are usually allocated in runs, so these are few)."""
    runs: list[list[int]] = []
    pos = start
    while pos < end:
        index, offset = divmod(pos, block_size)
        if index >= len(local_table) or index >= len(remote_table):
            raise TransferError(f"{end} tokens need {-(-end // block_size)} blocks on both sides")
        n = min(block_size - offset, end - pos)
        here, there = local_table[index] * block_size + offset, remote_table[index] * block_size + offset
        if runs and runs[-1][0] + runs[-1][2] == here and runs[-1][1] + runs[-1][2] == there:
            runs[-1][2] += n
        else:
            runs.append([here, there, n])
        pos += n
    return runs
