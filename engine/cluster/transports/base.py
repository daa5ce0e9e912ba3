"""What every KV transport does: send one request's KV from a prefill pool, open it on the decode side.

A send returns a handle: a small frozen, picklable record that travels through the router (the
payload does not) and knows how to free what it holds if the transfer is abandoned.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol

import torch

from ...core.kv_cache import KVPayload, PagedKVCache

if TYPE_CHECKING:
    from . import TransportSettings


PUSH_COPIES = 1   # a push writes from pool to pool


class TransferError(RuntimeError):
    pass


class KVHandle(Protocol):
    def discard(self) -> None:
        """Free whatever the handle holds, from any process, for a transfer that will never be received."""


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
        self.release()


class Transport:
    name: ClassVar[str]
    copies: ClassVar[int]   # copies of the KV bytes between the two pools on this route
    # False: the decode side open()s a payload and loads it into its blocks. True: it reserves the
    # blocks and start_read()s straight into them (nixl).
    reads_into_blocks: ClassVar[bool] = False
    # True: the router has a decode worker reserve blocks for each prompt up front, and the prefill
    # worker writes the KV into them layer by layer as it computes (nixl's push; see that module).
    pushes: ClassVar[bool] = False

    def __init__(self, settings: TransportSettings | None = None):
        """`settings` carries the options some transports have (the disk's folder and fsync)."""

    def attach(self, cache: PagedKVCache, receives_pushes: bool = False) -> None:
        """The worker's KV pool, once, before any transfer (a transport may register it).
        `receives_pushes`: other workers will write into it (a decode worker's)."""

    def poll(self) -> bool:
        """Called every worker iteration: a transport may finish its own bookkeeping here. True if
        that changed the worker's KV pool (blocks freed)."""
        return False

    def send(self, cache: PagedKVCache, block_table: list[int], num_tokens: int) -> SendResult:
        raise NotImplementedError

    def open(self, handle: KVHandle, dtype: torch.dtype) -> Received:
        raise NotImplementedError

    def start_read(self, handle: KVHandle, cache: PagedKVCache, block_table: list[int]):
        """For reads_into_blocks transports: begin reading into `block_table`; poll() the result."""
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
