"""Shared fixtures (the bundled model is loaded once per test session, on CPU) and helpers.

PDLAB_TEST_DEVICE=cuda runs the model-level tests (greedy equality, bf16 tolerance) on a GPU instead:
`PDLAB_TEST_DEVICE=cuda pytest tests/test_greedy_matches_generate.py tests/test_bf16_vs_fp32.py`."""
from __future__ import annotations

import os

import pytest
import torch
from transformers import AutoModelForCausalLM

from engine.cluster.messages import StepReport
from engine.cluster.transports import leaked_kv_folders, leaked_shm_segments
from engine.core.config import EngineConfig
from engine.core.llm_engine import LLMEngine
from engine.core.model_loader import bundled_model_folder, load_model


DEVICE = os.environ.get("PDLAB_TEST_DEVICE", "cpu")


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


def run_to_end(engine: LLMEngine) -> dict[str, list[int]]:
    """Step until idle; the generated token ids per request id."""
    tokens: dict[str, list[int]] = {}
    while engine.has_work:
        for e in engine.step():
            if e.token_id is not None:
                tokens.setdefault(e.request_id, []).append(e.token_id)
    return tokens


def greedy_reference(model, prompt_ids: list[int], n: int) -> list[int]:
    with torch.inference_mode():
        out = model.generate(torch.tensor([prompt_ids], device=model.device), max_new_tokens=n, min_new_tokens=n,
                             do_sample=False)
    return out[0, len(prompt_ids):].tolist()


def kv_leftovers() -> set[str]:
    """The KV shared-memory segments and private KV folders that exist now."""
    return set(leaked_shm_segments()) | set(leaked_kv_folders())


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind():
    """Whatever the tests start, they stop: no KV segment or folder outlives the test session."""
    before = kv_leftovers()
    yield
    left = kv_leftovers() - before
    assert not left, f"the tests left KV segments or folders behind: {sorted(left)}"


class Collected:
    """Stands in for the pipe to the router: keeps what the worker sends."""

    def __init__(self):
        self.messages = []

    def send(self, message):
        self.messages.append(message)

    def events(self):
        return [e for m in self.messages if isinstance(m, StepReport) for e in m.events]
