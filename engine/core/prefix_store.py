"""A prefix cache with a lifetime: the KV of prompt prefixes kept after their requests end.

Providers keep a prompt's KV for minutes (prompt caching: ~5-10 min of inactivity, up to an hour
or a day on some), so a second request with the same system prompt skips most of its prefill.
Here the KV of each prompt's whole blocks is stored (a copy, as a host-memory tier would hold it)
under the hash of its tokens; an entry expires `ttl_s` after its last use, and the least recently
used entries are evicted when the store would exceed `capacity_tokens`.
"""
from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from .kv_cache import KVPayload


@dataclass
class PrefixStats:
    hits: int = 0
    misses: int = 0
    expired: int = 0
    evicted: int = 0
    hit_tokens: int = 0


def prefix_key(token_ids: list[int]) -> str:
    return hashlib.sha256(repr(token_ids).encode()).hexdigest()


class PrefixStore:
    def __init__(self, capacity_tokens: int, ttl_s: float, block_size: int):
        if capacity_tokens < 0 or ttl_s <= 0:
            raise ValueError(f"prefix cache needs capacity >= 0 tokens and ttl > 0 s, got {capacity_tokens}, {ttl_s}")
        self.capacity_tokens = capacity_tokens
        self.ttl_s = ttl_s
        self.block_size = block_size
        self.stats = PrefixStats()
        self._entries: OrderedDict[str, tuple[KVPayload, float]] = OrderedDict()  # key -> (kv, last used)
        self._lengths: dict[str, int] = {}

    @property
    def tokens(self) -> int:
        return sum(self._lengths.values())

    def _prefix_lengths(self, num_tokens: int) -> range:
        """Whole-block prefix lengths, longest first, leaving at least one token to compute."""
        longest = (num_tokens - 1) // self.block_size * self.block_size
        return range(longest, 0, -self.block_size)

    def lookup(self, token_ids: list[int], now: float | None = None) -> tuple[int, KVPayload | None]:
        """The longest stored prefix of `token_ids`: (its length, its KV), or (0, None)."""
        now = time.monotonic() if now is None else now
        self._expire(now)
        for length in self._prefix_lengths(len(token_ids)):
            key = prefix_key(token_ids[:length])
            if key in self._entries:
                kv, _ = self._entries[key]
                self._entries[key] = (kv, now)
                self._entries.move_to_end(key)
                self.stats.hits += 1
                self.stats.hit_tokens += length
                return length, kv
        self.stats.misses += 1
        return 0, None

    def store(self, token_ids: list[int], export: Callable[[int], KVPayload], now: float | None = None) -> None:
        """Keep the KV of the whole-block prefix of `token_ids`. `export(n)` returns a fresh copy of
        its first n tokens' KV; it is called only when the prefix is not stored already."""
        now = time.monotonic() if now is None else now
        length = len(token_ids) // self.block_size * self.block_size
        if length == 0 or length > self.capacity_tokens:
            return
        key = prefix_key(token_ids[:length])
        if key in self._entries:  # a hit stored it already: only its lifetime restarts
            self._entries[key] = (self._entries[key][0], now)
        else:
            self._entries[key] = (export(length), now)
            self._lengths[key] = length
        self._entries.move_to_end(key)
        while self.tokens > self.capacity_tokens:
            old, _ = self._entries.popitem(last=False)
            del self._lengths[old]
            self.stats.evicted += 1

    def _expire(self, now: float) -> None:
        for key, (_, used) in list(self._entries.items()):
            if now - used > self.ttl_s:
                del self._entries[key]
                del self._lengths[key]
                self.stats.expired += 1
