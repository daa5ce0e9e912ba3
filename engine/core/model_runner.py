"""Turn a scheduled step into one packed forward pass and return the logits that get sampled."""
from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from .compiled_decode import CompiledDecode
from .kv_cache import PagedKVCache
from .model_loader import LoadedModel
from .packed_linear import PackedLinear
from .paged_attention import DecodeGroup, PrefillSegment, StepBatch
from .sequence import Sequence

log = logging.getLogger("pdlab.engine")

LONG_CONTEXT = 512  # decodes with at least this much context are attended alone when contiguous


class ModelRunner:
    def __init__(self, loaded: LoadedModel, cache: PagedKVCache):
        self.loaded = loaded
        self.cache = cache
        self.device = loaded.device
        self.compiled: CompiledDecode | None = None   # set by compile_decode()

    def compile_decode(self) -> None:
        """Compile the common decode step (compiled_decode.py): CPUs, fused decoders, packed linears that
        kept their plain weights (load_model's for_compiled_decode); any other model decodes eagerly, with
        a warning."""
        lm_head = self.loaded.model.lm_head
        if self.loaded.fused and isinstance(lm_head, PackedLinear) and lm_head.weight is not None:
            self.compiled = CompiledDecode(self.loaded.model, self.cache)
        else:
            log.warning("compile_decode is for fused Llama-family models on packed CPU linears loaded for it "
                        "(here: %s, %s on %s); decoding runs eagerly",
                        self.loaded.name, self.loaded.dtype, self.loaded.device)

    @torch.inference_mode()
    def run(self, work: list[tuple[Sequence, int]],
            layer_written: Callable[[int, list[tuple[Sequence, int]]], None] | None = None
            ) -> tuple[list[Sequence], torch.Tensor]:
        """Feed each sequence its next tokens; return the sequences that reached their last
        pending token (they sample now) and their logits, one row each. `layer_written(layer, work)`,
        if given, hears of each layer's KV as soon as it is in the pool (before num_computed moves)."""
        decodes = sorted(((s, n) for s, n in work if n == 1), key=lambda w: w[0].num_computed)
        prefills = [(s, n) for s, n in work if n > 1]
        ordered = decodes + prefills  # the attention function expects decode rows first

        ids, positions, write_slots, last_rows, sampling = [], [], [], [], []
        batch = StepBatch(self.cache, write_slots=torch.empty(0),
                          after_layer=(lambda layer: layer_written(layer, work)) if layer_written else None)
        row = 0
        for seq, n in ordered:
            start = seq.num_computed
            ids.extend(seq.token_ids[start:start + n])
            positions.extend(range(start, start + n))
            write_slots.append(self.cache.slots(seq.block_table, start, start + n))
            if n > 1:
                batch.prefills.append(self._prefill_segment(seq, row, n))
            if start + n == seq.num_tokens:
                last_rows.append(row + n - 1)
                sampling.append(seq)
            row += n
        batch.write_slots = torch.cat(write_slots)
        batch.decodes = self._decode_groups([s for s, _ in decodes])

        input_ids = torch.tensor(ids, device=self.device)
        position_ids = torch.tensor(positions, device=self.device)
        keep = torch.tensor(last_rows, dtype=torch.long, device=self.device)
        logits = None
        if self.compiled is not None and not prefills and len(batch.decodes) == 1 \
                and isinstance(batch.decodes[0].context, torch.Tensor):
            logits = self._compiled_decode(decodes, batch, input_ids, position_ids, work, layer_written)
        if logits is None:
            logits = self.loaded.forward(input_ids, position_ids, keep, batch)
        for seq, n in ordered:
            seq.num_computed += n
        return sampling, logits

    def _compiled_decode(self, decodes, batch: StepBatch, input_ids, position_ids, work, layer_written):
        """The step through the compiled graph, which leaves the pool alone: the new keys and values
        are written here, all layers at once; a push transport then hears of every layer."""
        slots = batch.decodes[0].context
        earlier = torch.tensor([s.num_computed for s, _ in decodes], device=self.device).unsqueeze(1)
        valid = torch.arange(slots.shape[1], device=self.device).unsqueeze(0) < earlier
        out = self.compiled(input_ids, position_ids, slots, valid)
        if out is None:
            return None
        logits, keys, values = out
        self.cache.write_layers(batch.write_slots, keys, values)
        if layer_written is not None:
            for layer in range(keys.shape[0]):
                layer_written(layer, work)
        return logits

    def _prefill_segment(self, seq: Sequence, row: int, n: int) -> PrefillSegment:
        start = seq.num_computed
        if start == 0:
            return PrefillSegment(row, n, None, None)
        context = start + n
        query_pos = torch.arange(start, context).unsqueeze(1)
        mask = (torch.arange(context).unsqueeze(0) <= query_pos).to(self.device)
        return PrefillSegment(row, n, self._context(seq, context), mask)

    def _context(self, seq: Sequence, length: int):
        span = self.cache.contiguous_span(seq.block_table, length)
        return span if span is not None else self.cache.slots(seq.block_table, 0, length)

    def _decode_groups(self, seqs: list[Sequence]) -> list[DecodeGroup]:
        """Decodes sorted by context length. A long context in contiguous blocks gets its own
        group (a view, no copy); the rest are split where padding would more than double the work."""
        groups, start = [], 0
        for i in range(len(seqs) + 1):
            span = None
            if i < len(seqs) and seqs[i].num_computed + 1 >= LONG_CONTEXT:
                span = self.cache.contiguous_span(seqs[i].block_table, seqs[i].num_computed + 1)
            if i > start and (i == len(seqs) or span is not None
                              or seqs[i].num_computed + 1 > 2 * (seqs[start].num_computed + 1) + 256):
                groups.append(DecodeGroup(start, i - start, *self._decode_context(seqs[start:i])))
                start = i
            if span is not None:
                groups.append(DecodeGroup(i, 1, span, None))
                start = i + 1
        return groups

    def _decode_context(self, seqs: list[Sequence]) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = [s.num_computed + 1 for s in seqs]
        width = max(lengths)
        slots = torch.zeros(len(seqs), width, dtype=torch.long, device=self.device)
        for i, (seq, length) in enumerate(zip(seqs, lengths)):
            slots[i, :length] = self.cache.slots(seq.block_table, 0, length)
        lengths_t = torch.tensor(lengths, device=self.device).unsqueeze(1)
        mask = torch.arange(width, device=self.device).unsqueeze(0) < lengths_t
        return slots, mask[:, None, None, :]
