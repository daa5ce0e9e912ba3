"""The engine: add requests, then step() = schedule -> one forward pass -> sample -> stream out.

It records when every token was produced (time.perf_counter) and what every step did.
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import TypeVar

import torch

from .config import EngineConfig, RequestError, SamplingParams
from .devices import describe_device, place_on_cpu_cores
from .events import FinishReason, TokenEvent, TokenLogprob
from .disk_tier import DiskTier, Layout
from .kv_cache import KVPayload, PagedKVCache
from .model_loader import LoadedModel, head_dim, load_model
from .model_runner import ModelRunner
from .prefix_store import PrefixStore, block_keys
from .prompts import PromptEncoder
from .sampler import SamplingError, logprobs, sample
from .scheduler import Scheduler
from .sequence import RequestRecord, Sequence, StepRecord

T = TypeVar("T")


class LLMEngine:
    def __init__(self, config: EngineConfig | None = None, loaded: LoadedModel | None = None, name: str = ""):
        self.config = config or EngineConfig()
        if self.config.cpu_cores or self.config.threads:
            place_on_cpu_cores(self.config.threads, self.config.cpu_cores)
        self.loaded = loaded or load_model(self.config.model, self.config.device, self.config.dtype,
                                         for_compiled_decode=self.config.compile_decode)
        self.tokenizer = self.loaded.tokenizer
        self.name = name
        mc = self.loaded.config
        self.cache = PagedKVCache(mc.num_hidden_layers, mc.num_key_value_heads, head_dim(mc),
                                  self.config.num_blocks, self.config.block_size,
                                  self.loaded.dtype, self.loaded.device)
        self.prefix_store = (PrefixStore(self.config.prefix_cache_tokens, self.config.prefix_cache_ttl_s,
                                         self.config.block_size) if self.config.prefix_cache_tokens else None)
        self.disk_tier = (DiskTier(self.config.kv_store_folder, self.config.kv_store_bytes, Layout(
            self.loaded.name, str(self.loaded.dtype).removeprefix("torch."), mc.num_hidden_layers,
            mc.num_key_value_heads, head_dim(mc), self.config.block_size), self.config.kv_store_ttl_s)
            if self.config.kv_store_folder else None)
        self.scheduler = Scheduler(self.config, self.cache, self._reuse_prefix)
        self.runner = ModelRunner(self.loaded, self.cache)
        if self.config.compile_decode:
            self.runner.compile_decode()
        self.eos_ids = self._eos_ids()
        self.prompts = PromptEncoder(self.tokenizer, self.loaded.config.vocab_size, self.loaded.max_context)
        self.sequences: dict[str, Sequence] = {}
        self.finished: list[RequestRecord] = []
        self.steps: list[StepRecord] = []
        # Told of each layer's KV as soon as a step has put it in the pool (a push transport sends it then).
        self.layer_written: Callable[[int, list[tuple[Sequence, int]]], None] | None = None
        self._ids = itertools.count()

    def _eos_ids(self) -> set[int]:
        ids = set()
        gen = getattr(self.loaded.model, "generation_config", None)
        for source in (getattr(gen, "eos_token_id", None), self.tokenizer.eos_token_id):
            if isinstance(source, int):
                ids.add(source)
            elif source:
                ids.update(source)
        return ids

    # ---- requests -------------------------------------------------------------------------

    def encode(self, prompt) -> list[int]:
        return self.prompts.encode(prompt)

    def decode(self, ids: list[int]) -> str:
        return self.prompts.decode(ids)

    def check_length(self, prompt_tokens: int, params: SamplingParams) -> None:
        self.prompts.check_length(prompt_tokens, params, self.cache.capacity_tokens)

    def add_request(self, prompt, params: SamplingParams | None = None, request_id: str | None = None,
                    arrival: float | None = None) -> str:
        """Validate and queue a request; raises RequestError (and changes nothing) if it is bad."""
        params = params or SamplingParams()
        ids = self.encode(prompt)
        self.check_length(len(ids), params)
        return self.admit(ids, params, request_id, arrival)

    def admit(self, prompt_ids: list[int], params: SamplingParams, request_id: str | None = None,
              arrival: float | None = None) -> str:
        """Queue a request whose prompt a front door (EngineLoop.submit, Cluster.submit) has encoded and
        checked already; raises RequestError only for a request id in use."""
        seq = self._new_sequence(prompt_ids, params, request_id, arrival)
        self.scheduler.add(seq)
        return seq.request_id

    def new_request_id(self) -> str:
        return f"{self.name or 'req'}-{next(self._ids)}"

    def _reuse_prefix(self, seq: Sequence) -> None:
        """Before a waiting prompt is first prefilled: load its longest cached prefix, if any, from memory
        or, if the disk holds a longer one, from disk."""
        if seq.num_computed or (self.prefix_store is None and self.disk_tier is None):
            return
        length, kv = self.prefix_store.lookup(seq.prompt_ids) if self.prefix_store else (0, None)
        tier = "memory"
        if self.disk_tier is not None:
            on_disk, from_disk = self._read_prefix_from_disk(seq.prompt_ids, longer_than=length)
            if from_disk is not None:
                length, kv, tier = on_disk, from_disk, "disk"
        if kv is None or not self.cache.can_grow(seq.block_table, length):
            return
        self.cache.grow(seq.block_table, length)
        self.cache.load(seq.block_table, kv)  # the stored entry holds exactly `length` tokens
        seq.num_computed = length
        seq.record.cached_tokens, seq.record.cache_tier = length, tier

    def _disk_keys(self, prompt_ids: list[int], blocks: int) -> list[str]:
        return block_keys(prompt_ids, self.config.block_size, blocks, seed=self.disk_tier.layout.seed)

    def _read_prefix_from_disk(self, prompt_ids: list[int], longer_than: int) -> tuple[int, KVPayload | None]:
        """The prompt's leading whole blocks found on disk (at least one token left to compute), if they
        are more than `longer_than` tokens: (tokens, their KV), else (0, None)."""
        disk, size = self.disk_tier, self.config.block_size
        keys = self._disk_keys(prompt_ids, (len(prompt_ids) - 1) // size)
        present = next((i for i, key in enumerate(keys) if not disk.has(key)), len(keys))
        if present * size <= longer_than:   # nothing on disk, or no more than memory had
            disk.stats.misses += 1
            return 0, None
        blocks = []
        for key in keys[:present]:
            block = disk.read(key)
            if block is None:   # refused or gone meanwhile: the prefix ends here
                break
            blocks.append(block)
        if len(blocks) * size <= longer_than:
            disk.stats.misses += 1
            return 0, None
        disk.stats.hits += 1
        return len(blocks) * size, KVPayload(torch.cat([b.key for b in blocks], dim=1),
                                             torch.cat([b.value for b in blocks], dim=1))

    def _write_prefix_to_disk(self, seq: Sequence) -> None:
        """The prompt's whole blocks the disk lacks, copied now and written by the tier's own thread."""
        disk, size = self.disk_tier, self.config.block_size
        keys = self._disk_keys(seq.prompt_ids, len(seq.prompt_ids) // size)
        missing = [i for i, key in enumerate(keys) if not disk.has(key)]
        if not missing:
            return
        kv = self.cache.export(seq.block_table, (missing[-1] + 1) * size)
        for i in missing:
            block = slice(i * size, (i + 1) * size)
            disk.write(keys[i], KVPayload(kv.key[:, block], kv.value[:, block]))

    def _new_sequence(self, ids, params, request_id, arrival) -> Sequence:
        request_id = request_id or self.new_request_id()
        if request_id in self.sequences:
            raise RequestError(f"request id {request_id!r} is already in use")
        record = RequestRecord(request_id, len(ids), arrival or time.perf_counter(), worker=self.name)
        generator = None
        if not params.greedy:
            generator = torch.Generator()
            generator.manual_seed(params.seed if params.seed is not None else torch.seed())
        seq = Sequence(request_id, ids, params, record, generator=generator)
        self.sequences[request_id] = seq
        return seq

    def abort(self, request_id: str, reason: FinishReason = FinishReason.ABORT,
              error: str | None = None) -> TokenEvent | None:
        seq = self.sequences.pop(request_id, None)
        if seq is None:
            return None
        self.scheduler.remove(seq)
        seq.finish(reason, error)
        self.finished.append(seq.record)
        return TokenEvent.end(request_id, reason, error, at=seq.record.finish)

    def fail_all(self, error: str) -> list[TokenEvent]:
        """End every request in the engine with an error (after a failed step, or at shutdown)."""
        return [self.abort(rid, FinishReason.ERROR, error) for rid in list(self.sequences)]

    def has_request(self, request_id: str) -> bool:
        return request_id in self.sequences

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work

    # ---- how busy it is, for reports ---------------------------------------------------------

    @property
    def num_running(self) -> int:
        return len(self.scheduler.running)

    @property
    def num_waiting(self) -> int:
        return len(self.scheduler.waiting)

    @property
    def kv_blocks_used(self) -> int:
        return self.cache.allocator.num_used

    @property
    def kv_blocks_total(self) -> int:
        return self.cache.allocator.num_blocks

    @property
    def device(self):
        return self.loaded.device

    def prefix_cache_stats(self) -> dict[str, dict[str, int]]:
        """Each prefix cache tier's size and counts so far (plain numbers: they travel in worker reports)."""
        stats = {}
        if self.prefix_store is not None:
            s = self.prefix_store.stats
            stats["memory"] = {"bytes": self.prefix_store.tokens * self.cache.bytes_per_token, "hits": s.hits,
                               "misses": s.misses, "evictions": s.evicted + s.expired}
        if self.disk_tier is not None:
            s = self.disk_tier.stats
            stats["disk"] = {"bytes": self.disk_tier.bytes_known, "hits": s.hits, "misses": s.misses,
                             "evictions": s.evicted + s.expired, "rejected": s.rejected}
        return stats

    def describe(self) -> str:
        """Its device in words, and whether its decode step is compiled."""
        compiled = ", decode step compiled" if self.runner.compiled is not None else ""
        return describe_device(self.device) + compiled

    # ---- the step ----------------------------------------------------------------------------

    def step(self) -> list[TokenEvent]:
        scheduled = self.scheduler.schedule()
        if scheduled is None:
            return []
        prompting = tuple(seq.request_id for seq, _ in scheduled.work if seq.num_computed < len(seq.prompt_ids))
        start = time.perf_counter()
        sampling, logits = self.runner.run(scheduled.work, self.layer_written)
        tokens = sample(logits, sampling, self.eos_ids) if sampling else []
        probs = logprobs(logits, sampling, tokens)
        now = time.perf_counter()
        self.steps.append(StepRecord(start, now - start, scheduled.kind,
                                     sum(n for _, n in scheduled.work), len(scheduled.work), self.name,
                                     prompting))
        return [self.abort(seq.request_id, FinishReason.ERROR, str(token)) if isinstance(token, SamplingError)
                else self._append(seq, token, now, lp) for seq, token, lp in zip(sampling, tokens, probs)]

    def _append(self, seq: Sequence, token: int, now: float, logprob: TokenLogprob | None = None) -> TokenEvent:
        """The token's event; it carries the finish reason when the token ends the request (as vLLM
        puts finish_reason on the last token's chunk)."""
        seq.output_ids.append(token)
        if logprob is not None:
            seq.output_logprobs.append(logprob)
        rec = seq.record
        rec.token_times.append(now)
        if rec.first_token is None:
            rec.first_token = now
            if self.prefix_store is not None:
                self.prefix_store.store(seq.prompt_ids, lambda n: self.cache.export(seq.block_table, n))
            if self.disk_tier is not None:
                self._write_prefix_to_disk(seq)
        text = self.decode(seq.output_ids)
        reason = None
        if token in self.eos_ids and not seq.params.ignore_eos:  # the sampler hid EOS before min_tokens
            reason = FinishReason.STOP
        elif seq.params.stop and len(seq.output_ids) >= seq.params.min_tokens:
            hit = min((i for i in (text.find(s, max(0, len(seq.output_text) - len(s))) for s in seq.params.stop)
                       if i >= 0), default=-1)
            if hit >= 0:
                text, reason = text[:hit], FinishReason.STOP
        if reason is None and len(seq.output_ids) >= seq.params.max_tokens:
            reason = FinishReason.LENGTH
        delta = self._text_delta(seq, text, final=reason is not None)
        if reason:
            self._finish(seq, reason)
        return TokenEvent(seq.request_id, token, delta, now, reason, logprob=logprob)

    @staticmethod
    def _text_delta(seq: Sequence, text: str, final: bool) -> str:
        # Hold back a trailing partial UTF-8 character until the next token completes it.
        if text.endswith("\ufffd") and not final:
            return ""
        delta = text[len(seq.output_text):] if text.startswith(seq.output_text) else ""
        seq.output_text = text
        return delta

    def _finish(self, seq: Sequence, reason: FinishReason) -> None:
        self.sequences.pop(seq.request_id, None)
        self.scheduler.remove(seq)
        seq.finish(reason)
        self.finished.append(seq.record)

    # ---- KV hand-off (disaggregated prefill) ---------------------------------------------------

    def hand_off(self, request_id: str, send: Callable[[PagedKVCache, list[int], int], T]) -> tuple[Sequence, T]:
        """Send a prefilled request's KV with `send(cache, block_table, num_tokens)`, then drop the
        request here (its blocks return to the pool). Returns the sequence and what `send` returned."""
        seq = self.sequences.pop(request_id)
        try:
            sent = send(self.cache, seq.block_table, seq.num_computed)
        finally:
            self.scheduler.remove(seq)
        seq.finish(FinishReason.HANDED_OFF)
        self.finished.append(seq.record)
        return seq, sent

    def begin_import(self, prompt_ids: list[int], num_kv_tokens: int, params: SamplingParams,
                     request_id: str, arrival: float) -> Sequence:
        """Reserve blocks for a request prefilled elsewhere (checked at the cluster's front door). Its KV
        is loaded into `seq.block_table` by the caller (layer by layer if it likes), then finish_import();
        or cancel_import(). Raises RequestError if there is no room or the id is in use."""
        if not self.can_import(num_kv_tokens):
            raise RequestError(f"no room for {num_kv_tokens} transferred tokens in this worker's KV cache")
        seq = self._new_sequence(prompt_ids, params, request_id, arrival)
        self.cache.grow(seq.block_table, num_kv_tokens + 1)
        return seq

    def finish_import(self, seq: Sequence, output_ids: list[int],
                      output_logprobs: list[TokenLogprob] = ()) -> list[TokenEvent]:
        """Start decoding an imported request. Returns the events of the tokens it brought (the
        first token, which the client sees only now: the transfer is part of TTFT)."""
        seq.num_computed = len(seq.prompt_ids) + len(output_ids) - 1
        seq.record.scheduled = time.perf_counter()
        self.scheduler.add_running(seq)
        now = time.perf_counter()
        brought = list(output_logprobs) or [None] * len(output_ids)
        return [self._append(seq, token, now, lp) for token, lp in zip(output_ids, brought)]

    def cancel_import(self, seq: Sequence) -> None:
        """Forget an import that will not finish, and free its blocks."""
        self.forget_import(seq)
        self.free_blocks(seq.block_table)

    def forget_import(self, seq: Sequence) -> None:
        """Forget an import that will not finish, keeping its blocks allocated (another worker may still
        write into them) until free_blocks()."""
        self.sequences.pop(seq.request_id, None)

    def free_blocks(self, block_table: list[int]) -> None:
        self.cache.release(block_table)

    def can_import(self, num_kv_tokens: int) -> bool:
        return self.cache.can_grow([], num_kv_tokens + 1)
