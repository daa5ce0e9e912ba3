"""Pick each sequence's next token from its logits: greedy, or temperature + top-p with a seed."""
from __future__ import annotations

import torch

from .sequence import Sequence


class SamplingError(RuntimeError):
    """One sequence's sampling failed; its request fails alone."""


def sample(logits: torch.Tensor, seqs: list[Sequence], eos_ids: set[int]) -> list[int | SamplingError]:
    """logits: [len(seqs), vocab], one row per sequence. Each sequence's token, or the error that kept
    it from having one (so one broken request never fails the others in its batch)."""
    logits = logits.float().clone()  # masked in place below
    for row, seq in enumerate(seqs):
        p = seq.params
        if eos_ids and (p.ignore_eos or len(seq.output_ids) < p.min_tokens):
            logits[row, list(eos_ids)] = float("-inf")
    chosen = logits.argmax(dim=-1).tolist()
    for row, seq in enumerate(seqs):
        if not seq.params.greedy:
            try:
                chosen[row] = _sample_one(logits[row], seq)
            except RuntimeError as exc:
                chosen[row] = SamplingError(f"sampling failed: {exc}")
    return chosen


def _sample_one(logits: torch.Tensor, seq: Sequence) -> int:
    probs = torch.softmax(logits / seq.params.temperature, dim=-1)
    if seq.params.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        before = sorted_probs.cumsum(0) - sorted_probs
        sorted_probs[before >= seq.params.top_p] = 0.0   # keep the smallest set reaching top_p
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    token = torch.multinomial(probs.cpu(), 1, generator=seq.generator)
    return int(token)
