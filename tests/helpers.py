"""What many tests use: the device they run on, driving an engine to the end, transformers' own greedy
answer, the KV leftovers a test may leave, and a stand-in for a worker's pipe to the router."""
from __future__ import annotations

import os

import torch

from engine.cluster.messages import StepReport
from engine.cluster.transports import leaked_kv_folders, leaked_shm_segments
from engine.core.llm_engine import LLMEngine

# PDLAB_TEST_DEVICE=cuda runs the model-level tests (greedy equality, bf16 tolerance) on a GPU instead:
# `PDLAB_TEST_DEVICE=cuda pytest tests/test_greedy_matches_generate.py tests/test_bf16_vs_fp32.py`.
DEVICE = os.environ.get("PDLAB_TEST_DEVICE", "cpu")


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


class Collected:
    """Stands in for the pipe to the router: keeps what the worker sends."""

    def __init__(self):
        self.messages = []

    def send(self, message):
        self.messages.append(message)

    def events(self):
        return [e for m in self.messages if isinstance(m, StepReport) for e in m.events]
