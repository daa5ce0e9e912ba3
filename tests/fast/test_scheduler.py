"""The schedulers with the stand-in model: what each step holds, and that waiting, chunking and
preemption never change an answer (the real model's tokens are checked in tests/test_kv_capacity.py)."""
from engine.core.config import EngineConfig, Policy, SamplingParams
from tests.fast.tiny_model import expected_answer, tiny_engine
from tests.helpers import run_to_end

LONG, SHORT = list(range(1, 41)), [7, 8, 9]   # 40 and 3 tokens


def params(n: int) -> SamplingParams:
    return SamplingParams(max_tokens=n, ignore_eos=True)


def test_prefill_first_stalls_the_running_decodes_for_a_whole_prompt():
    engine = tiny_engine(EngineConfig(kv_cache_tokens=256, policy=Policy.PREFILL_FIRST))
    engine.add_request(SHORT, params(8), "short")
    engine.step()
    engine.add_request(LONG, params(2), "long")
    engine.step()
    step = engine.steps[-1]
    assert (step.kind, step.num_tokens, step.prompt_requests) == ("prefill", 40, ("long",))   # no decode in it
    assert run_to_end(engine) == {"short": expected_answer(SHORT, 8)[1:], "long": expected_answer(LONG, 2)[1:]}


def test_chunked_prefill_shares_each_step_with_the_decodes_within_its_budget():
    engine = tiny_engine(EngineConfig(kv_cache_tokens=256, policy=Policy.CHUNKED, chunk_size=16))
    engine.add_request(SHORT, params(8), "short")
    engine.step()
    engine.add_request(LONG, params(2), "long")
    tokens = run_to_end(engine)
    mixed = [s for s in engine.steps if s.kind == "mixed"]
    assert mixed and all(s.num_tokens <= 16 for s in engine.steps)
    assert tokens == {"short": expected_answer(SHORT, 8)[1:], "long": expected_answer(LONG, 2)}


def test_a_full_kv_cache_makes_prompts_wait_and_preempts_without_changing_any_answer():
    engine = tiny_engine(EngineConfig(kv_cache_tokens=64, block_size=16))   # four blocks
    for name in "abc":
        engine.add_request(LONG[:20], params(20), name)
    tokens = run_to_end(engine)
    assert tokens == dict.fromkeys("abc", expected_answer(LONG[:20], 20))
    assert sum(r.preemptions for r in engine.finished) > 0 and engine.kv_blocks_used == 0
