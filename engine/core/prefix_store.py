"""A prefix cache with a lifetime: the KV of prompt prefixes kept after their requests end.

Providers keep a prompt's KV for minutes (prompt caching: ~5-10 min of inactivity, up to an hour
or a day on some), so a second request with the same system prompt skips most of its prefill.
Here the KV of each prompt's whole blocks is stored (a copy, as a host-memory tier would hold it),
each block under a key that names its whole prefix (block_keys); a block expires `ttl_s` after its
last use, and the least recently used blocks are evicted when the store would exceed
`capacity_tokens`. The disk tier below it (disk_tier.py) keys its files the same way.
"""
from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .kv_cache import KVPayload


@dataclass
class PrefixStats:
    hits: int = 0            # lookups that found a prefix
    misses: int = 0
    expired: int = 0         # blocks
    evicted: int = 0         # blocks
    hit_tokens: int = 0


def block_keys(token_ids: list[int], block_size: int, blocks: int, seed: str = "") -> list[str]:
    """The key of each of the first `blocks` whole blocks, chained as vLLM's prefix caching keys blocks:
    the hash of the parent block's key and the block's own token ids, so a key names its whole prefix."""
    parent, keys = hashlib.sha256(seed.encode()).hexdigest(), []
    for i in range(blocks):
        parent = hashlib.sha256(f"{parent}:{token_ids[i * block_size:(i + 1) * block_size]}".encode()).hexdigest()
        keys.append(parent)
    return keys


class PrefixStore:
    def __init__(self, capacity_tokens: int, ttl_s: float, block_size: int):
        if capacity_tokens < 0 or ttl_s <= 0:
            raise ValueError(f"prefix cache needs capacity >= 0 tokens and ttl > 0 s, got {capacity_tokens}, {ttl_s}")
        self.capacity_tokens = capacity_tokens
        self.ttl_s = ttl_s
        self.block_size = block_size
        self.stats = PrefixStats()
        # key -> (the block's KV, last used); least recently used first, a block's children before it
        self._blocks: OrderedDict[str, tuple[KVPayload, float]] = OrderedDict()

    @property
    def tokens(self) -> int:
        return len(self._blocks) * self.block_size

    def _touch(self, keys: list[str], now: float) -> None:
        for key in reversed(keys):   # a parent ends up more recent than its children: they go first
            self._blocks[key] = (self._blocks[key][0], now)
            self._blocks.move_to_end(key)

    def lookup(self, token_ids: list[int], now: float | None = None) -> tuple[int, KVPayload | None]:
        """The longest stored whole-block prefix of `token_ids`, leaving at least one token to compute:
        (its length, its KV), or (0, None)."""
        now = time.monotonic() if now is None else now
        self._expire(now)
        keys = block_keys(token_ids, self.block_size, (len(token_ids) - 1) // self.block_size)
        found = []
        for key in keys:
            if key not in self._blocks:
                break
            found.append(key)
        if not found:
            self.stats.misses += 1
            return 0, None
        self._touch(found, now)
        length = len(found) * self.block_size
        self.stats.hits += 1
        self.stats.hit_tokens += length
        blocks = [self._blocks[key][0] for key in found]
        return length, KVPayload(torch.cat([b.key for b in blocks], dim=1), torch.cat([b.value for b in blocks], dim=1))

    def store(self, token_ids: list[int], export: Callable[[int], KVPayload], now: float | None = None) -> None:
        """Keep the KV of the whole blocks of `token_ids` (as many as the capacity holds). `export(n)`
        returns a fresh copy of its first n tokens' KV; it is called only if a block is not stored yet."""
        now = time.monotonic() if now is None else now
        keys = block_keys(token_ids, self.block_size,
                          min(len(token_ids), self.capacity_tokens) // self.block_size)
        missing = [i for i, key in enumerate(keys) if key not in self._blocks]
        if missing:
            kv = export((missing[-1] + 1) * self.block_size)
            for i in missing:
                block = slice(i * self.block_size, (i + 1) * self.block_size)
                self._blocks[keys[i]] = (KVPayload(kv.key[:, block].clone(), kv.value[:, block].clone()), now)
        self._touch(keys, now)
        while self.tokens > self.capacity_tokens:
            self._blocks.popitem(last=False)
            self.stats.evicted += 1

    def _expire(self, now: float) -> None:
        for key, (_, used) in list(self._blocks.items()):
            if now - used > self.ttl_s:
                del self._blocks[key]
                self.stats.expired += 1
