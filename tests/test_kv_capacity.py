"""A full KV cache makes requests wait or be preempted, never crash; all finish correctly."""
import pytest

from engine.core.config import SamplingParams
from tests.helpers import greedy_reference, run_to_end

NEW_TOKENS = 24


@pytest.mark.parametrize("policy", ["prefill-first", "chunked"])
def test_requests_wait_for_blocks_and_all_finish_with_correct_output(make_engine, reference_model, chat, policy):
    prompts = [chat(t) for t in ("Tell me about cats.", "Tell me about dogs.", "What is rain?",
                                 "Why do birds sing?")]
    longest = max(len(p) for p in prompts) + NEW_TOKENS
    # Room for about two sequences at once: the others must wait, or be preempted and recomputed.
    engine = make_engine(policy=policy, block_size=8, kv_cache_tokens=2 * longest + 8, chunk_size=32)
    ids = [engine.add_request(p, SamplingParams(max_tokens=NEW_TOKENS, ignore_eos=True)) for p in prompts]
    peak = 0
    got: dict[str, list[int]] = {}
    while engine.has_work:
        for e in engine.step():
            if e.token_id is not None:
                got.setdefault(e.request_id, []).append(e.token_id)
        peak = max(peak, engine.cache.allocator.num_used)
        assert len(engine.scheduler.running) <= 3
    assert peak <= engine.cache.allocator.num_blocks
    assert [got[i] for i in ids] == [greedy_reference(reference_model, p, NEW_TOKENS) for p in prompts]
    assert engine.cache.allocator.num_used == 0
    waited = [r for r in engine.finished if r.scheduled - r.arrival > 0.05 or r.preemptions]
    assert waited, "with room for two sequences, some of four must have waited"


def test_decode_growth_preempts_youngest_and_recomputes_it(make_engine, reference_model, chat):
    prompts = [chat("Count from one to twenty."), chat("Say the alphabet.")]
    # Both prompts fit at once, but not both outputs: the younger one gets preempted.
    room = len(prompts[0]) + len(prompts[1]) + 16
    engine = make_engine(policy="prefill-first", block_size=4, kv_cache_tokens=room)
    ids = [engine.add_request(p, SamplingParams(max_tokens=NEW_TOKENS, ignore_eos=True)) for p in prompts]
    got = run_to_end(engine)
    records = {r.request_id: r for r in engine.finished}
    assert records[ids[1]].preemptions >= 1 and records[ids[0]].preemptions == 0
    assert [got[i] for i in ids] == [greedy_reference(reference_model, p, NEW_TOKENS) for p in prompts]
    assert engine.cache.allocator.num_used == 0
