"""A decode worker's record of one KV import: a prompt prefilled elsewhere whose KV comes into this
worker's pool, from the moment the worker hears of it until its blocks are decoding or free again.

    Reserve ──> RESERVED ──ImportKV──> LANDING ──KV in place──> (decoding, in the engine)
    ImportKV ─> QUEUED ──room──────────^   │
    RESERVED ──Release──> RELEASING        └──abort, failure──> RELEASING (reserved) or freed
    RELEASING ──writer stopped──> blocks freed

SGLang's decode side keeps the same stages as queues (prealloc, transfer); here one record per
request says which it is in.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from ..core.sequence import Sequence
from .messages import KVHandOff
from .transports import Incoming


class ImportPhase(enum.StrEnum):
    QUEUED = "queued"          # a hand-off waiting, in arrival order, for room in this pool
    RESERVED = "reserved"      # push: blocks held for a prompt still prefilling elsewhere
    LANDING = "landing"        # its KV is coming into its blocks (loaded, read or pushed)
    RELEASING = "releasing"    # ended early: its blocks are freed once no writer can write into them


@dataclass
class Import:
    request_id: str
    phase: ImportPhase
    hand_off: KVHandOff | None = None   # from ImportKV (a reservation has none before it)
    seq: Sequence | None = None         # the engine's sequence, holding the blocks (none while QUEUED)
    incoming: Incoming | None = None    # LANDING: the transfer the worker polls
    started: float = 0.0                # LANDING: when the transfer began (perf_counter)
    reserved: bool = False              # its blocks were reserved before the prefill: a writer may write there
    released_at: float = 0.0            # RELEASING: since when (time.monotonic())
