"""The engine's batched, paged, chunked forward gives exactly model.generate's greedy tokens."""
import pytest

from engine.core.config import SamplingParams
from tests.helpers import greedy_reference, run_to_end

PROMPTS = [
    "What is the capital of France?",
    "hi",
    "Write a short poem about the sea, the wind and a small boat that sails home at night.",
    "Explain in two sentences why the sky is blue.",
    "List five fruits.",
]
NEW_TOKENS = 20


@pytest.fixture(scope="module")
def references(reference_model, loaded):
    enc = lambda t: list(loaded.tokenizer.apply_chat_template(  # noqa: E731
        [{"role": "user", "content": t}], add_generation_prompt=True, tokenize=True)["input_ids"])
    prompts = [enc(p) for p in PROMPTS]
    return prompts, [greedy_reference(reference_model, p, NEW_TOKENS) for p in prompts]


@pytest.mark.parametrize("policy,chunk", [("prefill-first", 256), ("chunked", 256), ("chunked", 7)])
def test_batch_of_mixed_length_prompts_is_token_identical_to_generate(make_engine, references, policy, chunk):
    prompts, expected = references
    engine = make_engine(policy=policy, chunk_size=chunk)
    ids = [engine.add_request(p, SamplingParams(max_tokens=NEW_TOKENS, ignore_eos=True)) for p in prompts]
    got = run_to_end(engine)
    assert [got[i] for i in ids] == expected
    assert engine.cache.allocator.num_used == 0


def test_chunked_policy_mixes_decode_and_prefill_in_one_step(make_engine, references):
    prompts, expected = references
    engine = make_engine(policy="chunked", chunk_size=16)
    first = engine.add_request(prompts[0], SamplingParams(max_tokens=NEW_TOKENS, ignore_eos=True))
    engine.step()
    engine.step()  # the first prompt is decoding now
    second = engine.add_request(prompts[2], SamplingParams(max_tokens=NEW_TOKENS, ignore_eos=True))
    got = run_to_end(engine)
    kinds = {s.kind for s in engine.steps}
    assert "mixed" in kinds
    assert max(s.num_tokens for s in engine.steps) <= 16
    assert got[first] == expected[0] and got[second] == expected[2]


def test_prefill_first_runs_whole_prompt_in_one_step_while_decodes_wait(make_engine, references):
    prompts, _ = references
    engine = make_engine(policy="prefill-first")
    engine.add_request(prompts[0], SamplingParams(max_tokens=5, ignore_eos=True))
    engine.step()
    engine.add_request(prompts[2], SamplingParams(max_tokens=5, ignore_eos=True))
    engine.step()
    last = engine.steps[-1]
    assert (last.kind, last.num_tokens, last.batch_size) == ("prefill", len(prompts[2]), 1)


@pytest.mark.parametrize("policy", ["prefill-first", "chunked"])
def test_long_context_decode_beside_short_ones_is_token_identical(make_engine, reference_model, chat, policy):
    long_prompt = chat("Repeat after me: " + " ".join(f"item {i}," for i in range(300)))
    assert len(long_prompt) > 600   # above LONG_CONTEXT: attended as a contiguous span
    short = chat("Name a color.")
    engine = make_engine(policy=policy, chunk_size=128)
    ids = [engine.add_request(p, SamplingParams(max_tokens=12, ignore_eos=True)) for p in (short, long_prompt)]
    spans = []
    original = engine.runner._decode_groups
    engine.runner._decode_groups = lambda seqs: spans.append(original(seqs)) or spans[-1]
    got = run_to_end(engine)
    assert any(isinstance(g.context, tuple) for groups in spans for g in groups)
    assert got[ids[0]] == greedy_reference(reference_model, short, 12)
    assert got[ids[1]] == greedy_reference(reference_model, long_prompt, 12)
