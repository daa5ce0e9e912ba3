"""Cache-aware routing: send a prompt to the worker that most likely still holds its prefix's KV.

The router keeps no copy of the workers' caches; it remembers, for the leading whole blocks of the
prompts it routed, which worker got them last (an approximate index, as SGLang's router keeps an
approximate radix tree of routed prompts per worker, and Ray Serve's PrefixCacheAffinityRouter a
prefix tree). A prompt goes to the worker that last got its first block, unless the workers'
loads differ by more than IMBALANCE requests: then the least loaded one takes it, whatever it holds
(both routers check balance first). A worker may have evicted what the index remembers: the cost is
a recompute, as with no index.
"""
from __future__ import annotations

from ..core.prefix_store import block_keys
from .history import BoundedDict

IMBALANCE = 2            # requests: past this spread in load, balance wins over affinity
KEYS_KEPT = 200_000      # remembered blocks, oldest forgotten first (~3 M tokens of prefixes at 16 a block)


class PrefixAffinity:
    def __init__(self, block_size: int):
        self.block_size = block_size
        self._owner: dict[str, str] = BoundedDict(KEYS_KEPT)   # block key -> the worker it was last routed to

    def choose(self, prompt_ids: list[int], loads: dict[str, int]) -> str:
        """The worker, of those in `loads` (name -> requests placed there), for this prompt: the one its
        first block was last routed to (a later prompt that shared it took all the blocks they share)."""
        least = min(loads, key=loads.get)
        if max(loads.values()) - loads[least] > IMBALANCE:
            return least
        keys = self._keys(prompt_ids)
        owner = self._owner.get(keys[0]) if keys else None
        return owner if owner in loads else least

    def routed(self, prompt_ids: list[int], worker: str) -> None:
        for key in self._keys(prompt_ids):
            self._owner.pop(key, None)   # re-inserted: most recent last, so the oldest are forgotten first
            self._owner[key] = worker

    def _keys(self, prompt_ids: list[int]) -> list[str]:
        return block_keys(prompt_ids, self.block_size, len(prompt_ids) // self.block_size)
