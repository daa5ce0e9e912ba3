"""The prefix cache's disk tier: whole KV blocks in files, shared by every worker that names the same
folder and kept across restarts (the learner's SSD, where production stacks use 3FS or an NVMe pool).

Blocks are keyed as the memory tier keys them (prefix_store.block_keys, as vLLM's prefix caching
does), seeded with the layout, so a block's key names the whole prefix up to it and the model. One file per
block: a header (the model, dtype and pool layout it was computed with, its size and a CRC32 of its
bytes) and the block's K then V, [layers, block_size, kv_heads, head_dim] each. A file that is
truncated, corrupted, or from another model, dtype or layout is a miss (logged and removed), never a
wrong answer. Writes go through a thread of their own, to a temporary file renamed into place, so a
worker killed mid-write leaves no half file under a block's name; the least recently used files go
when the folder would exceed its bound, and a block unused for its lifetime is a miss. The folder is
private to its user (0700).
"""
from __future__ import annotations

import json
import logging
import os
import queue
import struct
import threading
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .kv_cache import KVPayload

log = logging.getLogger("pdlab.engine")

MAGIC = b"PDLABKV1"
SUFFIX = ".kv"
EVICT_TO = 0.9   # eviction frees down to this share of the bound, so it does not run at every write


@dataclass(frozen=True)
class Layout:
    """What a block's bytes mean: files of another layout are misses."""
    model: str
    dtype: str
    layers: int
    kv_heads: int
    head_dim: int
    block_size: int

    @property
    def block_shape(self) -> tuple[int, int, int, int]:
        return (self.layers, self.block_size, self.kv_heads, self.head_dim)

    @property
    def seed(self) -> str:
        return json.dumps(asdict(self))


@dataclass
class TierStats:
    hits: int = 0            # lookups that loaded a prefix from disk
    misses: int = 0          # lookups that did not
    blocks_read: int = 0
    rejected: int = 0        # files refused (corrupt, truncated, another layout), each logged
    expired: int = 0         # blocks not used within the lifetime
    written: int = 0         # blocks written
    written_bytes: int = 0
    evicted: int = 0         # blocks removed to stay within the bound


class DiskTier:
    def __init__(self, folder: str | os.PathLike, capacity_bytes: int, layout: Layout, ttl_s: float = 86400.0):
        """`ttl_s`: a block not read or written for this long is a miss, and removed."""
        if capacity_bytes <= 0 or ttl_s <= 0:
            raise ValueError(f"the KV store needs a bound > 0 bytes and a lifetime > 0 s, got {capacity_bytes}, "
                             f"{ttl_s}")
        self.ttl_s = ttl_s
        self.folder = Path(folder)
        self.capacity_bytes = capacity_bytes
        self.layout = layout
        self.stats = TierStats()
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.folder.stat().st_uid != os.getuid():
            raise ValueError(f"KV store folder {self.folder} belongs to another user; name a folder of your own")
        self.folder.chmod(0o700)
        self._remove_dead_writers_files()
        self._bytes = sum(f.stat().st_size for f in self._files())   # what a fresh start finds is indexed
        self._writes: queue.Queue = queue.Queue()
        self._writer = threading.Thread(target=self._write_loop, name="kv-disk-writer", daemon=True)
        self._writer.start()

    # ---- reads, on the engine's loop ----

    def has(self, key: str) -> bool:
        """Whether the block is on disk and alive (an expired one is removed)."""
        path = self._path(key)
        try:
            idle = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return False
        if idle > self.ttl_s:
            path.unlink(missing_ok=True)
            self.stats.expired += 1
            return False
        return True

    def read(self, key: str) -> KVPayload | None:
        """The block's KV, or None (missing, or refused with a log line)."""
        path = self._path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            payload = self._decode(data, key)
        except ValueError as exc:
            log.warning("KV store: %s refused (%s); it is removed and counted a miss", path.name, exc)
            self.stats.rejected += 1
            path.unlink(missing_ok=True)
            return None
        os.utime(path)   # recently used: evicted last
        self.stats.blocks_read += 1
        return payload

    def _decode(self, data: bytes, key: str) -> KVPayload:
        if len(data) < len(MAGIC) + 4 or not data.startswith(MAGIC):
            raise ValueError("not a pd-lab KV block file")
        (header_len,) = struct.unpack_from("!I", data, len(MAGIC))
        start = len(MAGIC) + 4 + header_len
        try:
            header = json.loads(data[len(MAGIC) + 4:start])
        except ValueError as exc:
            raise ValueError("its header is unreadable") from exc
        if header.get("layout") != asdict(self.layout) or header.get("key") != key:
            raise ValueError(f"it was written for {header.get('layout')}, this engine is {asdict(self.layout)}")
        body = data[start:]
        if len(body) != header.get("nbytes") or zlib.crc32(body) != header.get("crc32"):
            raise ValueError("its bytes are truncated or corrupted (size or CRC32 differ)")
        flat = torch.frombuffer(bytearray(body), dtype=getattr(torch, self.layout.dtype))
        half = flat.numel() // 2
        shape = self.layout.block_shape
        return KVPayload(flat[:half].view(shape), flat[half:].view(shape))

    # ---- writes, off the engine's loop ----

    def write(self, key: str, payload: KVPayload) -> None:
        """Queue one block's KV (a copy the caller no longer changes) for the writer thread."""
        self._writes.put((key, payload))

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every queued write is on disk (for tests and a clean stop)."""
        done = threading.Event()
        self._writes.put(done)
        done.wait(timeout)

    def close(self) -> None:
        self._writes.put(None)
        self._writer.join(30)

    def _write_loop(self) -> None:
        while (item := self._writes.get()) is not None:
            if isinstance(item, threading.Event):
                item.set()
                continue
            key, payload = item
            try:
                self._write_file(key, payload)
            except OSError as exc:   # a full disk, a removed folder: the cache just does not keep it
                log.warning("KV store: could not write block %s (%s)", key[:12], exc)

    def _write_file(self, key: str, payload: KVPayload) -> None:
        path = self._path(key)
        if path.exists():
            return
        body = torch.cat([payload.key.contiguous().view(-1), payload.value.contiguous().view(-1)]).view(
            torch.uint8).numpy().tobytes()
        header = json.dumps({"layout": asdict(self.layout), "key": key, "nbytes": len(body),
                             "crc32": zlib.crc32(body)}).encode()
        tmp = self.folder / f".{key}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(MAGIC + struct.pack("!I", len(header)) + header + body)
        os.replace(tmp, path)   # whole or not at all under the block's name
        size = len(MAGIC) + 4 + len(header) + len(body)
        self.stats.written += 1
        self.stats.written_bytes += size
        self._bytes += size
        if self._bytes > self.capacity_bytes:
            self._evict()

    def _evict(self) -> None:
        """Least recently used first (reads touch a file), down to EVICT_TO of the bound. Other workers
        share the folder: the total is read from it, not counted here alone."""
        files = []
        for f in self._files():
            try:
                stat = f.stat()
            except FileNotFoundError:   # another worker evicted it
                continue
            files.append((stat.st_mtime, stat.st_size, f))
        total = sum(size for _, size, _ in files)
        for _, size, f in sorted(files, key=lambda entry: entry[0]):
            if total <= self.capacity_bytes * EVICT_TO:
                break
            f.unlink(missing_ok=True)
            total -= size
            self.stats.evicted += 1
        self._bytes = total

    # ---- the folder ----

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}{SUFFIX}"

    def _files(self) -> list[Path]:
        return list(self.folder.glob(f"*{SUFFIX}"))

    @property
    def bytes_known(self) -> int:
        """The folder's size as this worker last knew it (others write to it too), without reading it."""
        return self._bytes

    @property
    def bytes_on_disk(self) -> int:
        return sum(f.stat().st_size for f in self._files() if f.exists())

    def _remove_dead_writers_files(self) -> None:
        """Temporary files of writers that died mid-write."""
        for tmp in self.folder.glob(".*.tmp"):
            pid = tmp.name.rsplit(".", 2)[-2]
            if not pid.isdigit() or not _alive(int(pid)):
                tmp.unlink(missing_ok=True)


def clear(folder: str | os.PathLike) -> int:
    """Remove every block file and leftover temporary file of a KV store folder; returns how many."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for f in [*folder.glob(f"*{SUFFIX}"), *folder.glob(".*.tmp")]:
        f.unlink(missing_ok=True)
        removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
