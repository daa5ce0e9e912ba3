"""Sampling settings do what they say: seeds repeat, stops stop, min/ignore EOS hold."""
from engine.core.config import SamplingParams
from tests.helpers import run_to_end


def generate(engine, prompt, **params):
    rid = engine.add_request(prompt, SamplingParams(**params))
    tokens = run_to_end(engine)[rid]
    record = engine.finished[-1]
    return tokens, record


def test_same_seed_same_tokens_other_seed_other_tokens(make_engine, chat):
    engine = make_engine()
    p = chat("Write a story about a dragon.")
    a, _ = generate(engine, p, max_tokens=24, temperature=1.0, seed=7, ignore_eos=True)
    b, _ = generate(engine, p, max_tokens=24, temperature=1.0, seed=7, ignore_eos=True)
    c, _ = generate(engine, p, max_tokens=24, temperature=1.0, seed=8, ignore_eos=True)
    assert a == b and a != c


def test_tiny_top_p_keeps_only_the_most_likely_token(make_engine, chat):
    engine = make_engine()
    p = chat("Name a planet.")
    greedy, _ = generate(engine, p, max_tokens=12, ignore_eos=True)
    nucleus, _ = generate(engine, p, max_tokens=12, temperature=1.0, top_p=1e-6, seed=3, ignore_eos=True)
    assert nucleus == greedy


def test_greedy_stops_at_eos_with_reason_stop(make_engine, chat):
    engine = make_engine()
    tokens, record = generate(engine, chat("Say just: yes"), max_tokens=64)
    assert record.finish_reason == "stop" and tokens[-1] in engine.eos_ids and len(tokens) < 64


def test_ignore_eos_and_max_tokens_give_exact_length(make_engine, chat):
    engine = make_engine()
    tokens, record = generate(engine, chat("Say just: yes"), max_tokens=30, ignore_eos=True)
    assert len(tokens) == 30 and record.finish_reason == "length"


def test_min_tokens_holds_eos_back(make_engine, chat):
    engine = make_engine()
    short, _ = generate(engine, chat("Say just: yes"), max_tokens=64)
    tokens, record = generate(engine, chat("Say just: yes"), max_tokens=64, min_tokens=len(short) + 5)
    assert len(tokens) >= len(short) + 5
    assert all(t not in engine.eos_ids for t in tokens[: len(short) + 4])


def test_stop_string_ends_output_before_the_stop(make_engine, chat):
    engine = make_engine()
    full_ids, _ = generate(engine, chat("Count from 1 to 10, separated by commas."), max_tokens=40)
    full = engine.decode(full_ids)
    assert "5" in full, full
    prompt = chat("Count from 1 to 10, separated by commas.")
    rid = engine.add_request(prompt, SamplingParams(max_tokens=40, stop=["5"]))
    text = ""
    while engine.has_work:
        text += "".join(e.text for e in engine.step() if e.request_id == rid)
    assert engine.finished[-1].finish_reason == "stop"
    assert text == full[: full.index("5")]


def test_a_temperature_too_small_to_divide_by_samples_greedily_as_vllm_does(make_engine, chat):
    engine = make_engine()
    p = chat("Name a planet.")
    greedy, _ = generate(engine, p, max_tokens=12, ignore_eos=True)
    tiny, record = generate(engine, p, max_tokens=12, temperature=1e-40, seed=1, ignore_eos=True)
    assert tiny == greedy and record.finish_reason == "length"


def test_one_request_whose_sampling_fails_fails_alone(make_engine, chat, monkeypatch):
    from engine.core import sampler
    real = sampler._sample_one

    def broken_for_seed_13(logits, seq):
        if seq.params.seed == 13:
            raise RuntimeError("probability tensor contains inf or nan")
        return real(logits, seq)
    monkeypatch.setattr(sampler, "_sample_one", broken_for_seed_13)
    engine = make_engine()
    healthy = [engine.add_request(chat(f"Count to {n}."), SamplingParams(max_tokens=8, ignore_eos=True, temperature=1.0,
                                                                            seed=n)) for n in (1, 2)]
    broken = engine.add_request(chat("Hi."), SamplingParams(max_tokens=8, temperature=1.0, seed=13))
    tokens = run_to_end(engine)
    records = {r.request_id: r for r in engine.finished}
    assert records[broken].finish_reason == "error" and "sampling failed" in records[broken].error
    assert all(records[rid].finish_reason == "length" and len(tokens[rid]) == 8 for rid in healthy)
