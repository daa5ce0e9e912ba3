"""Pick each sequence's next token from its logits: penalties, then greedy or temperature + top-p with
a seed; and the log-probabilities a request asked for."""
from __future__ import annotations

import torch

from .events import TokenLogprob
from .sequence import Sequence


class SamplingError(RuntimeError):
    """One sequence's sampling failed; its request fails alone."""


def sample(logits: torch.Tensor, seqs: list[Sequence], eos_ids: set[int]) -> list[int | SamplingError]:
    """logits: [len(seqs), vocab], one row per sequence. Each sequence's token, or the error that kept
    it from having one (so one broken request never fails the others in its batch)."""
    logits = logits.float().clone()  # masked in place below
    for row, seq in enumerate(seqs):
        p = seq.params
        if p.penalized:
            _penalize(logits[row], seq)
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


def logprobs(logits: torch.Tensor, seqs: list[Sequence], tokens: list) -> list[TokenLogprob | None]:
    """Each chosen token's log-probability and its sequence's top alternatives, from the model's own
    logits (what vLLM reports by default); None where the request did not ask."""
    out: list[TokenLogprob | None] = [None] * len(seqs)
    for row, (seq, token) in enumerate(zip(seqs, tokens)):
        asked = seq.params.logprobs
        if asked is None or isinstance(token, SamplingError):
            continue
        lp = torch.log_softmax(logits[row].float(), dim=-1)
        top = lp.topk(asked) if asked else None
        out[row] = TokenLogprob(float(lp[token]), tuple(zip(top.indices.tolist(), top.values.tolist())) if top else ())
    return out


def _penalize(logits: torch.Tensor, seq: Sequence) -> None:
    """In place, in vLLM's order: repetition over prompt and output, then frequency and presence over
    the output only."""
    p = seq.params
    if p.repetition_penalty != 1.0:
        seen = torch.tensor(seq.prompt_ids + seq.output_ids, device=logits.device).unique()
        values = logits[seen]
        finfo = torch.finfo(logits.dtype)   # a tiny penalty (5e-324 is valid) must not divide a logit to inf
        logits[seen] = torch.where(values > 0, values / p.repetition_penalty,
                                   values * p.repetition_penalty).clamp(finfo.min, finfo.max)
    if seq.output_ids and (p.frequency_penalty or p.presence_penalty):
        counts = torch.bincount(torch.tensor(seq.output_ids, device=logits.device), minlength=logits.shape[0])
        counts = counts[:logits.shape[0]].float()
        logits -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).float()


def _sample_one(logits: torch.Tensor, seq: Sequence) -> int:
    # Shifted by the largest logit first: huge logits over a small temperature stay finite.
    probs = torch.softmax((logits - logits.max()) / seq.params.temperature, dim=-1)
    if seq.params.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        before = sorted_probs.cumsum(0) - sorted_probs
        cut = before >= seq.params.top_p   # keep the smallest set reaching top_p...
        cut[0] = False                     # ...and always the likeliest token (a top_p that rounds to 0)
        sorted_probs[cut] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    token = torch.multinomial(probs.cpu(), 1, generator=seq.generator)
    return int(token)
