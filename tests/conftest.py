"""Shared fixtures: the bundled model is loaded once per test session (on tests.helpers.DEVICE)."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from engine.core.config import EngineConfig
from engine.core.llm_engine import LLMEngine
from engine.core.model_loader import bundled_model_folder, load_model
from tests.helpers import DEVICE, kv_leftovers


@pytest.fixture(scope="session")
def loaded():
    return load_model("bundled", device=DEVICE, dtype="float32")


@pytest.fixture(scope="session")
def reference_model():
    """The same weights with transformers' own attention and cache: the yardstick."""
    return AutoModelForCausalLM.from_pretrained(bundled_model_folder(), dtype=torch.float32).to(DEVICE).eval()


@pytest.fixture
def make_engine(loaded):
    def make(**overrides) -> LLMEngine:
        return LLMEngine(EngineConfig(**{"kv_cache_tokens": 4096, **overrides}), loaded=loaded)
    return make


@pytest.fixture
def chat(loaded):
    def encode(text: str) -> list[int]:
        out = loaded.tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                                   add_generation_prompt=True, tokenize=True)
        return list(out["input_ids"] if hasattr(out, "keys") else out)
    return encode


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind():
    """Whatever the tests start, they stop: no KV segment or folder outlives the test session."""
    before = kv_leftovers()
    yield
    left = kv_leftovers() - before
    assert not left, f"the tests left KV segments or folders behind: {sorted(left)}"
