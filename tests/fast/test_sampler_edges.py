"""Values the API allows at their extremes sample a token, never fail the request (found by schemathesis)."""
import torch

from engine.core.config import SamplingParams
from engine.core.sampler import SamplingError, sample
from engine.core.sequence import RequestRecord, Sequence


def seq(**params) -> Sequence:
    generator = torch.Generator().manual_seed(0)
    return Sequence("r", [1, 2, 3], SamplingParams(**params), RequestRecord("r", 3, 0.0), generator=generator)


def test_a_tiny_repetition_penalty_or_top_p_still_samples_the_likeliest_tokens():
    logits = torch.tensor([[5.0, 1.0, 30.0, -2.0, 0.5]])
    for params in (dict(temperature=1.0, repetition_penalty=5e-324), dict(temperature=1.0, top_p=5e-324),
                   dict(temperature=1e-3, repetition_penalty=5e-324)):
        (token,) = sample(logits, [seq(**params)], eos_ids=set())
        assert not isinstance(token, SamplingError) and 0 <= token < 5, params
    (token,) = sample(logits, [seq(temperature=1.0, top_p=5e-324)], eos_ids=set())
    assert token == 2   # the smallest set reaching top_p is the likeliest token alone
