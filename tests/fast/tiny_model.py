"""A stand-in for a model, so the real engine, workers, router and transports run with no weights.

The real LLMEngine drives it (scheduler, paged KV cache, sampler, hand-off API): only the forward
pass is replaced. Each step writes every layer's KV of its tokens into the pool through the same
hook as the real attention (so a push transport hears of each layer as it is written), and each
byte is a function of (token, position, layer): a test can say where every byte of a transferred
prompt must be. The next token is a function of the last token and its position, so colocated and
disaggregated runs must give the same answers.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch

from engine.core.config import EngineConfig
from engine.core.kv_cache import KVPayload
from engine.core.llm_engine import LLMEngine
from engine.core.paged_attention import StepBatch

LAYERS, KV_HEADS, HEAD_DIM, VOCAB, CONTEXT = 4, 2, 8, 64, 2048


def kv_of(tokens: torch.Tensor, positions: torch.Tensor, layer: int) -> torch.Tensor:
    """The key every layer writes for these tokens [T] -> [T, KV_HEADS, HEAD_DIM]; the value is its negative."""
    base = tokens.float() * 1000 + positions.float() + layer / 10
    return base.view(-1, 1, 1).expand(-1, KV_HEADS, HEAD_DIM).clone()


def expected_kv(prompt_ids: list[int]) -> KVPayload:
    """What a prompt's KV must be, wherever it was computed: [layers, tokens, heads, dim]."""
    tokens, positions = torch.tensor(prompt_ids), torch.arange(len(prompt_ids))
    key = torch.stack([kv_of(tokens, positions, layer) for layer in range(LAYERS)])
    return KVPayload(key, -key)


def next_token(token: int, position: int) -> int:
    return (token * 7 + position + 1) % VOCAB


def expected_answer(prompt_ids: list[int], n: int) -> list[int]:
    answer, token = [], prompt_ids[-1]
    for position in range(len(prompt_ids) - 1, len(prompt_ids) - 1 + n):
        token = next_token(token, position)
        answer.append(token)
    return answer


class TinyTokenizer:
    """Text is one token per character; enough for the engine's text deltas and prompt checks."""
    eos_token_id = None

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) % VOCAB for c in text]

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return "".join(chr(ord("a") + i % 26) for i in ids)


class TinyModel:
    name = "tiny"
    dtype = torch.float32
    device = torch.device("cpu")
    fused = False
    matmul_params = 0
    max_context = CONTEXT
    config = SimpleNamespace(num_hidden_layers=LAYERS, num_key_value_heads=KV_HEADS, head_dim=HEAD_DIM,
                             vocab_size=VOCAB, max_position_embeddings=CONTEXT)
    model = SimpleNamespace(generation_config=None)
    tokenizer = TinyTokenizer()

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, keep: torch.Tensor,
                batch: StepBatch) -> torch.Tensor:
        for layer in range(LAYERS):
            key = kv_of(input_ids, position_ids, layer)
            batch.cache.write(layer, batch.write_slots, key, -key)
            if batch.after_layer is not None:
                batch.after_layer(layer)
        logits = torch.full((len(keep), VOCAB), -1e4)
        chosen = [next_token(int(input_ids[row]), int(position_ids[row])) for row in keep.tolist()]
        logits[torch.arange(len(keep)), torch.tensor(chosen, dtype=torch.long)] = 0.0
        return logits


def tiny_engine(config: EngineConfig | None = None, name: str = "") -> LLMEngine:
    return LLMEngine(config or EngineConfig(kv_cache_tokens=512), loaded=TinyModel(), name=name)
