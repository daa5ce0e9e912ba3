"""A worker's KV pool in shared memory, so that another process on the host can write into its blocks.

The pool moves into an anonymous memory file (memfd): it has no name under /dev/shm, so nothing of
it is left behind whatever ends the worker, and the kernel frees it when the last process that maps
it is gone. Another process of the same user maps it through /proc/<pid>/fd/<fd> while the worker
lives.
"""
from __future__ import annotations

import mmap
import os
from dataclasses import dataclass

import torch

from ...core.kv_cache import PagedKVCache
from .base import TransferError


@dataclass(frozen=True)
class SharedPool:
    """Where one worker's pool lies and how it is laid out: K then V, each [layers, slots, heads, dim]."""
    pid: int
    fd: int
    shape: tuple[int, int, int, int]
    dtype: str                 # "float32", "bfloat16", ...
    block_size: int

    def check_fits(self, cache: PagedKVCache) -> None:
        """Raise unless `cache`'s KV can be copied into this pool block for block."""
        layers, _, heads, dim = cache.key.shape
        if (self.shape[0], self.shape[2], self.shape[3], self.dtype, self.block_size) != (
                layers, heads, dim, str(cache.key.dtype).removeprefix("torch."), cache.block_size):
            raise TransferError("the prefill and decode KV pools differ in layout (layers, heads, dtype or block "
                                "size); both must run the same model and settings")


def _views(buffer, shape, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    flat = torch.frombuffer(buffer, dtype=dtype)
    half = flat.numel() // 2
    return flat[:half].view(shape), flat[half:].view(shape)


def share(cache: PagedKVCache) -> tuple[SharedPool, int]:
    """Move the pool's K and V into one memory file; returns its address and the descriptor, which
    must stay open for other processes to map it (close it when the worker stops)."""
    fd = os.memfd_create(f"pdlab-kv-{os.getpid()}")
    try:
        os.ftruncate(fd, cache.key.nbytes + cache.value.nbytes)
        key, value = _views(mmap.mmap(fd, cache.key.nbytes + cache.value.nbytes), cache.key.shape, cache.key.dtype)
    except BaseException:
        os.close(fd)
        raise
    key.copy_(cache.key)        # the pool's pages are touched now, at start, not mid-run
    value.copy_(cache.value)
    cache.key, cache.value = key, value
    dtype = str(cache.key.dtype).removeprefix("torch.")
    return SharedPool(os.getpid(), fd, tuple(cache.key.shape), dtype, cache.block_size), fd


def open_pool(pool: SharedPool) -> tuple[torch.Tensor, torch.Tensor]:
    """Another worker's K and V, mapped into this process (until the tensors are dropped)."""
    try:
        fd = os.open(f"/proc/{pool.pid}/fd/{pool.fd}", os.O_RDWR)
    except OSError as exc:
        raise TransferError(f"cannot open the decode worker's KV pool (process {pool.pid}): {exc.strerror}") from exc
    try:
        size = os.fstat(fd).st_size
        # Mapped in full at once: the prefill's writes then take no page faults.
        buffer = mmap.mmap(fd, size, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE)
    finally:
        os.close(fd)
    return _views(buffer, pool.shape, getattr(torch, pool.dtype))
