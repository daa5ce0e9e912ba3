"""Penalties and log-probabilities match transformers' own: the repetition penalty token for token with
model.generate, logprobs with log_softmax of the reference model's logits; presence and frequency
penalties by OpenAI's formula on known logits."""
import pytest
import torch

from engine.core.config import RequestError, SamplingParams
from engine.core.sampler import sample
from engine.core.sequence import RequestRecord, Sequence

PROMPT = "Repeat after me: the cat sat on the mat, the cat sat on the mat, the cat sat on the mat."


def events_of(engine, prompt, **params):
    rid = engine.add_request(prompt, SamplingParams(**params))
    events = []
    while engine.has_work:
        events += [e for e in engine.step() if e.request_id == rid and e.token_id is not None]
    return events


def test_repetition_penalty_gives_generates_tokens(make_engine, chat, reference_model):
    prompt = chat(PROMPT)
    with torch.inference_mode():
        out = reference_model.generate(torch.tensor([prompt]), max_new_tokens=24, min_new_tokens=24, do_sample=False,
                                       repetition_penalty=1.3)
    expected = out[0, len(prompt):].tolist()
    engine = make_engine()
    plain = [e.token_id for e in events_of(engine, prompt, max_tokens=24, ignore_eos=True)]
    penalized = [e.token_id for e in events_of(engine, prompt, max_tokens=24, ignore_eos=True,
                                                 repetition_penalty=1.3)]
    assert penalized == expected and penalized != plain


def test_logprobs_are_the_reference_models_log_softmax(make_engine, chat, reference_model):
    prompt = chat("Name three colours.")
    engine = make_engine(policy="chunked", chunk_size=16)   # a chunked prefill samples from its last chunk
    events = events_of(engine, prompt, max_tokens=6, ignore_eos=True, logprobs=3)
    tokens = [e.token_id for e in events]
    with torch.inference_mode():
        logits = reference_model(torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1:-1]
    expected = torch.log_softmax(logits.float(), dim=-1)
    for step, event in enumerate(events):
        lp = event.logprob
        top = expected[step].topk(3)
        assert lp.logprob == pytest.approx(float(expected[step, event.token_id]), abs=2e-3)
        assert [t for t, _ in lp.top] == top.indices.tolist()
        assert [v for _, v in lp.top] == pytest.approx(top.values.tolist(), abs=2e-3)
        assert lp.top[0][0] == event.token_id   # greedy: the chosen token is the most likely


def test_logprobs_zero_reports_only_the_chosen_token_and_none_when_not_asked(make_engine, chat):
    engine = make_engine()
    only = events_of(engine, chat("Hi"), max_tokens=3, ignore_eos=True, logprobs=0)
    assert all(e.logprob.top == () and e.logprob.logprob <= 0 for e in only)
    assert all(e.logprob is None for e in events_of(engine, chat("Hi"), max_tokens=3, ignore_eos=True))


def sequence(prompt, output, **params):
    seq = Sequence("r", prompt, SamplingParams(max_tokens=8, **params), RequestRecord("r", len(prompt), 0.0))
    seq.output_ids = list(output)
    return seq


def test_presence_and_frequency_penalties_follow_openais_formula():
    # logit[t] -= frequency * count(t in output) + presence * (count > 0); the prompt does not count
    logits = torch.tensor([[5.0, 4.0, 3.9, 0.0]])
    assert sample(logits, [sequence([2, 2], [0, 0])], set()) == [0]                           # no penalty
    assert sample(logits, [sequence([2, 2], [0, 0], frequency_penalty=0.6)], set()) == [1]   # 5 - 1.2 = 3.8 < 4
    assert sample(logits, [sequence([2, 2], [0, 1], presence_penalty=1.2)], set()) == [2]    # 3.8, 2.8 < 3.9
    assert sample(logits, [sequence([0], [], frequency_penalty=2.0)], set()) == [0]           # prompt only
    assert sample(logits, [sequence([1], [0], presence_penalty=-2.0)], set()) == [0]         # a reward


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits():
    logits = torch.tensor([[2.0, 1.5, -1.0, -1.5]])
    assert sample(logits, [sequence([0], [], repetition_penalty=1.5)], set()) == [1]        # 2/1.5 < 1.5
    neg = torch.tensor([[-1.0, -1.2, -9.0, -9.0]])
    assert sample(neg, [sequence([0], [], repetition_penalty=1.5)], set()) == [1]           # -1.5 < -1.2


@pytest.mark.parametrize("params,message", [
    ({"presence_penalty": 2.5}, "presence_penalty must be between -2 and 2"),
    ({"frequency_penalty": -3}, "frequency_penalty must be between -2 and 2"),
    ({"repetition_penalty": 0}, "repetition_penalty must be greater than 0"),
    ({"logprobs": 21}, "logprobs must be between 0 and 20"),
])
def test_out_of_range_settings_are_refused_with_the_allowed_range(params, message):
    with pytest.raises(RequestError, match=message):
        SamplingParams(**params)
