"""The fused decoder runs Llama-family models (biases included, as Qwen2 has them) with transformers'
own greedy tokens; an architecture it does not know keeps transformers' forward, with the same result.
Small random models built from a config: nothing is downloaded."""
import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen3Config

from engine.core.config import EngineConfig, SamplingParams
from engine.core.llm_engine import LLMEngine
from engine.core.model_loader import load_model
from tests.helpers import greedy_reference, run_to_end

SMALL = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
             initializer_range=0.3)   # larger than usual: sharp attention, so positions matter
PROMPTS = [[5, 17, 300, 42, 9], list(range(40, 77)), [1, 2]]


def saved_model(folder, config) -> AutoModelForCausalLM:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    model.save_pretrained(folder)
    return model


@pytest.mark.parametrize("config,fused", [(Qwen2Config(**SMALL), True), (Qwen3Config(head_dim=16, **SMALL), False)],
                         ids=["qwen2-fused", "qwen3-transformers"])
def test_small_models_give_generates_greedy_tokens(tmp_path, loaded, config, fused):
    reference = saved_model(tmp_path, config)
    loaded.tokenizer.save_pretrained(tmp_path)
    small = load_model(str(tmp_path), device="cpu", dtype="float32")
    assert small.fused is fused
    if fused:
        assert small.model.model.layers[0].self_attn.qkv_proj.bias is not None   # Qwen2's q, k, v biases
    engine = LLMEngine(EngineConfig(kv_cache_tokens=1024, policy="chunked", chunk_size=16), loaded=small)
    ids = [engine.add_request(p, SamplingParams(max_tokens=12, ignore_eos=True)) for p in PROMPTS]
    got = run_to_end(engine)
    assert [got[i] for i in ids] == [greedy_reference(reference, p, 12) for p in PROMPTS]


def test_the_bundled_model_runs_fused(loaded):
    assert loaded.fused
