"""The compiled decode step (engine/core/compiled_decode.py) computes what the eager step computes.

On a small random Llama (2 layers) saved with the bundled tokenizer: compiling the 30-layer bundled model
takes over a minute on 2 cores; this one compiles in seconds through the same code.
"""
from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from engine.cluster.cluster import Cluster
from engine.cluster.placement import plan_workers
from engine.cluster.topology import Mode, Role, Topology
from engine.cluster.transports import TransportSettings
from engine.core.config import EngineConfig, SamplingParams
from engine.core.llm_engine import LLMEngine
from engine.core.model_loader import bundled_model_folder, load_model

from tests.helpers import run_to_end

PROMPTS = ["Hello", "Tell me about the sea and the ships on it, please.", "One two three four five six seven"]


@pytest.fixture(scope="module")
def small_llama(tmp_path_factory):
    folder = tmp_path_factory.mktemp("small-llama")
    tokenizer = AutoTokenizer.from_pretrained(bundled_model_folder())
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def eager(small_llama):
    return run(small_llama, compile_decode=False)


@pytest.fixture(scope="module")
def compiled(small_llama):
    """One compiled engine for the module: each compile takes seconds on 2 cores."""
    return run(small_llama, compile_decode=True)


def run(folder: str, compile_decode: bool) -> tuple[LLMEngine, dict[str, list[int]]]:
    engine = LLMEngine(EngineConfig(model=folder, device="cpu", dtype="float32", kv_cache_tokens=2048,
                                    compile_decode=compile_decode))
    for i, prompt in enumerate(PROMPTS):   # contexts of different lengths: one padded group
        engine.add_request(prompt, SamplingParams(max_tokens=24, ignore_eos=True), request_id=f"r{i}")
    tokens = run_to_end(engine)
    engine.add_request("Alone", SamplingParams(max_tokens=12, ignore_eos=True), request_id="solo")  # a batch of 1
    tokens |= run_to_end(engine)
    return engine, tokens


def test_a_model_on_unpacked_linears_decodes_eagerly_and_says_so(small_llama, caplog):
    engine = LLMEngine(EngineConfig(model=small_llama, device="cpu", dtype="float16", kv_cache_tokens=2048,
                                    compile_decode=True))
    assert engine.runner.compiled is None
    assert "decoding runs eagerly" in caplog.text
    engine.add_request("Hello", SamplingParams(max_tokens=4, ignore_eos=True), request_id="r")
    assert len(run_to_end(engine)["r"]) == 4


def test_a_model_loaded_without_its_plain_weights_decodes_eagerly_and_says_so(small_llama, caplog):
    """The graph's GEMMs read the plain weights, which only a load for compile_decode keeps."""
    loaded = load_model(small_llama, device="cpu", dtype="float32")
    assert loaded.model.lm_head.weight is None
    engine = LLMEngine(EngineConfig(model=small_llama, kv_cache_tokens=2048, compile_decode=True), loaded=loaded)
    assert engine.runner.compiled is None
    assert "loaded for it" in caplog.text
    kept = load_model(small_llama, device="cpu", dtype="float32", for_compiled_decode=True)
    assert torch.equal(kept.model.lm_head.weight, kept.model.model.embed_tokens.weight)   # tied, as loaded


def test_compiled_decode_gives_the_eager_tokens_and_kv(eager, compiled):
    (eager, eager_tokens), (compiled, compiled_tokens) = eager, compiled
    assert compiled.runner.compiled is not None and eager.runner.compiled is None
    # Every decode step of both batches went through the graph (the first token comes from the prefill).
    assert compiled.runner.compiled.steps == (24 - 1) + (12 - 1)
    assert compiled_tokens == eager_tokens
    # The graph's new keys and values were written where the eager attention writes them.
    torch.testing.assert_close(compiled.cache.key, eager.cache.key, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(compiled.cache.value, eager.cache.value, rtol=1e-4, atol=1e-5)


def test_a_step_the_graph_was_not_compiled_for_is_left_to_the_eager_path(compiled):
    engine, _ = compiled
    steps = engine.runner.compiled.steps
    with torch.inference_mode():   # the runner makes its inputs in inference mode; the graph's guards check it
        slots = torch.zeros(3, 4, dtype=torch.long)
        valid = torch.ones(3, 4, dtype=torch.bool)
        ids = torch.zeros(3, dtype=torch.long)
        positions = torch.zeros(3, dtype=torch.long)
        assert engine.runner.compiled(ids, positions, slots, valid) is not None
        # int32 token ids: the graph's guards do not hold, and no second compile is made mid-serving.
        assert engine.runner.compiled(ids.int(), positions, slots, valid) is None
    assert engine.runner.compiled.steps == steps + 1


def test_a_compiled_decode_worker_streams_the_eager_tokens_from_its_shared_pool(small_llama, eager):
    """Over shm the decode worker's pool moves into shared memory after the engine (and its graph) is
    built: the graph must read the pool the transport pushes into."""
    _, eager_tokens = eager
    config = EngineConfig(model=small_llama, device="cpu", dtype="float32", kv_cache_tokens=2048, compile_decode=True)
    with Cluster(Topology("disaggregated"), config, transport=TransportSettings("shm")) as cluster:
        details = {w.role: w.detail for w in cluster.status()}
        streams = [cluster.submit(p, SamplingParams(max_tokens=24, ignore_eos=True)) for p in PROMPTS]
        for stream in streams:
            assert stream.wait(120)
        assert [s.token_ids for s in streams] == [eager_tokens[f"r{i}"] for i in range(len(PROMPTS))]
        assert all(t.during_prefill for t in cluster.transfers.values())   # pushed into the shared pool
    assert "decode step compiled" in details[Role.DECODE] and "compiled" not in details[Role.PREFILL]


def test_only_workers_that_decode_compile():
    topology = Topology(Mode.DISAGGREGATED, 1, 1, 1, "cpu")
    specs, _ = plan_workers(topology, EngineConfig(compile_decode=True), TransportSettings("shm"), cores=[0, 1])
    assert {s.role: s.engine.compile_decode for s in specs} == {Role.PREFILL: False, Role.DECODE: True}
