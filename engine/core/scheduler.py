"""Which sequences run in the next step, and how many of their tokens.

prefill-first: a waiting prompt is prefilled whole, before any decode continues. Every running
    stream stalls for the whole prefill: the lecture's problem.
chunked: each step has a token budget; decodes go first (one token each) and the rest of the
    budget takes a chunk of a prompt (Sarathi-Serve's stall-free batching).
Both grow a sequence's KV blocks as it needs them; when none are free, the youngest running
sequence is preempted (its blocks freed, recomputed later).
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .config import EngineConfig, Policy
from .kv_cache import PagedKVCache
from .sequence import Sequence, Status, StepKind


@dataclass
class ScheduledStep:
    work: list[tuple[Sequence, int]]   # (sequence, tokens to feed this step)
    kind: StepKind


class Scheduler:
    def __init__(self, config: EngineConfig, cache: PagedKVCache,
                 reuse_prefix: Callable[[Sequence], None] = lambda seq: None):
        self.config = config
        self.cache = cache
        self.reuse_prefix = reuse_prefix  # may fill a waiting sequence's first blocks from a prefix cache
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def add_running(self, seq: Sequence) -> None:
        """A sequence whose KV is already in the cache (imported after a remote prefill)."""
        seq.status = Status.RUNNING
        self.running.append(seq)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def remove(self, seq: Sequence) -> None:
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.cache.release(seq.block_table)

    def schedule(self) -> ScheduledStep | None:
        if self.config.policy == Policy.PREFILL_FIRST:
            return self._schedule_prefill_first()
        return self._schedule_chunked()

    def _head(self) -> Sequence:
        seq = self.waiting[0]
        if not seq.prefix_checked:
            seq.prefix_checked = True
            self.reuse_prefix(seq)
        return seq

    def _admit(self, seq: Sequence) -> None:
        self.waiting.popleft()
        seq.status = Status.RUNNING
        if seq.record.scheduled is None:
            seq.record.scheduled = time.perf_counter()
        self.running.append(seq)

    def _schedule_prefill_first(self) -> ScheduledStep | None:
        work: list[tuple[Sequence, int]] = []
        budget = self.config.max_prefill_tokens
        while self.waiting and len(self.running) < self.config.max_num_seqs:
            seq = self._head()
            if work and seq.num_pending > budget:
                break
            if not self.cache.can_grow(seq.block_table, seq.num_tokens):
                break
            self.cache.grow(seq.block_table, seq.num_tokens)
            self._admit(seq)
            work.append((seq, seq.num_pending))
            budget -= seq.num_pending
        if work:
            return ScheduledStep(work, "prefill")
        work = [(seq, 1) for seq in self._grow_decodes()]
        return ScheduledStep(work, "decode") if work else None

    def _schedule_chunked(self) -> ScheduledStep | None:
        decodes = self._grow_decodes()
        work = [(seq, 1) for seq in decodes]
        budget = self.config.chunk_size - len(work)
        partial = [seq for seq in self.running if seq.is_prefilling]
        for seq in partial:
            if budget <= 0:
                break
            budget -= self._take_chunk(seq, budget, work)
        while budget > 0 and self.waiting and len(self.running) < self.config.max_num_seqs:
            seq = self._head()
            taken = self._take_chunk(seq, budget, work)
            if not taken:
                break
            self._admit(seq)
            budget -= taken
        if not work:
            return None
        has_prefill = any(n > 1 or seq.is_prefilling for seq, n in work)
        kind = StepKind.MIXED if decodes and has_prefill else (StepKind.PREFILL if has_prefill else StepKind.DECODE)
        return ScheduledStep(work, kind)

    def _take_chunk(self, seq: Sequence, budget: int, work: list[tuple[Sequence, int]]) -> int:
        chunk = min(seq.num_pending, budget)
        end = seq.num_computed + chunk
        if not self.cache.can_grow(seq.block_table, end):
            return 0
        self.cache.grow(seq.block_table, end)
        work.append((seq, chunk))
        return chunk

    def _grow_decodes(self) -> list[Sequence]:
        """Running decodes that got room for one more token, preempting the youngest if needed."""
        ready = []
        for seq in sorted((s for s in self.running if not s.is_prefilling), key=lambda s: s.record.arrival):
            if seq.status is not Status.RUNNING:
                continue  # preempted earlier in this loop
            while not self.cache.can_grow(seq.block_table, seq.num_tokens):
                victim = max(self.running, key=lambda s: s.record.arrival)
                self._preempt(victim)
                if victim is seq:
                    break
            if seq.status is Status.RUNNING:
                self.cache.grow(seq.block_table, seq.num_tokens)
                ready.append(seq)
        return ready

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.cache.release(seq.block_table)
        seq.num_computed = 0
        seq.prefix_checked = False
        seq.status = Status.WAITING
        seq.record.preemptions += 1
        self.waiting.appendleft(seq)
