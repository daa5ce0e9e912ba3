"""The forward pass of Llama-family decoders (Llama, Mistral, Qwen2; SmolLM2 is a Llama), written for
the engine's packed steps, as vLLM writes its own model code.

transformers' forward is general: per layer three matrix multiplies for q, k and v and two for the
MLP's gate and up, two rotary passes, and the wrappers built for training and generate() around
every layer. Here each layer does one matrix multiply for q, k, v together and one for gate and up
(fewer, larger GEMMs stream the same weights faster on a CPU), rotates q and k in one pass, and the
loop over the layers has nothing else in it; the final norm and the output layer see only the rows
that sample. The weights, norms, rotary tables and activation are the loaded model's own: greedy
output equals `model.generate` token for token (tests/test_greedy_matches_generate.py).
Other architectures keep transformers' forward with the paged attention plugged in.
"""
from __future__ import annotations

import torch
from transformers.models.llama.modeling_llama import rotate_half   # Mistral's and Qwen2's are the same

from .paged_attention import StepBatch, paged_attention

SUPPORTED_TYPES = ("llama", "mistral", "qwen2")


def _concat(linears: list[torch.nn.Linear]) -> torch.nn.Linear:
    """One linear layer whose output is the given layers' outputs side by side."""
    weight = torch.cat([m.weight.detach() for m in linears])
    has_bias = [m.bias is not None for m in linears]
    fused = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=any(has_bias),
                            device=weight.device, dtype=weight.dtype)
    fused.weight.data = weight
    if any(has_bias):
        fused.bias.data = torch.cat([m.bias.detach() if m.bias is not None
                                     else torch.zeros(m.out_features, dtype=weight.dtype, device=weight.device)
                                     for m in linears])
    return fused


class FusedAttention(torch.nn.Module):
    """q, k, v in one projection; attention over the paged KV cache; the output projection."""

    def __init__(self, attn: torch.nn.Module):
        super().__init__()
        self.layer_idx, self.head_dim, self.scaling = attn.layer_idx, attn.head_dim, attn.scaling
        self.heads = attn.q_proj.out_features // attn.head_dim
        self.kv_heads = attn.k_proj.out_features // attn.head_dim
        self.qkv_proj = _concat([attn.q_proj, attn.k_proj, attn.v_proj])
        self.o_proj = attn.o_proj

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, batch: StepBatch) -> torch.Tensor:
        tokens = x.shape[0]
        qkv = self.qkv_proj(x).view(tokens, self.heads + 2 * self.kv_heads, self.head_dim)
        qk = qkv[:, :self.heads + self.kv_heads]
        qk = qk * cos + rotate_half(qk) * sin
        out = paged_attention(batch, self.layer_idx, qk[:, :self.heads], qk[:, self.heads:],
                              qkv[:, self.heads + self.kv_heads:], self.scaling)
        return self.o_proj(out.view(tokens, self.heads * self.head_dim))


class FusedMLP(torch.nn.Module):
    """gate and up in one projection, then act(gate) * up through the down projection."""

    def __init__(self, mlp: torch.nn.Module):
        super().__init__()
        self.intermediate = mlp.gate_proj.out_features
        self.gate_up_proj = _concat([mlp.gate_proj, mlp.up_proj])
        self.down_proj = mlp.down_proj
        self.act_fn = mlp.act_fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up = self.gate_up_proj(x)
        return self.down_proj(self.act_fn(gate_up[:, :self.intermediate]) * gate_up[:, self.intermediate:])


def can_fuse(model: torch.nn.Module) -> bool:
    if getattr(model.config, "model_type", None) not in SUPPORTED_TYPES:
        return False
    attn, mlp = model.model.layers[0].self_attn, model.model.layers[0].mlp
    known_attn = {"q_proj", "k_proj", "v_proj", "o_proj"}   # no q/k norms (Qwen3, OLMo2 have them)
    known_mlp = {"gate_proj", "up_proj", "down_proj", "act_fn"}
    return ({n for n, _ in attn.named_children()} == known_attn
            and {n for n, _ in mlp.named_children()} == known_mlp)


def fuse_layers(model: torch.nn.Module) -> None:
    """Swap each layer's attention and MLP for their fused forms, in place (the separate q, k, v,
    gate and up weights are dropped: the model then runs only through `decoder_forward`)."""
    for layer in model.model.layers:
        layer.self_attn = FusedAttention(layer.self_attn)
        layer.mlp = FusedMLP(layer.mlp)


def decoder_forward(model: torch.nn.Module, input_ids: torch.Tensor, position_ids: torch.Tensor,
                    keep: torch.Tensor, batch: StepBatch) -> torch.Tensor:
    """Logits [len(keep), vocab] of the packed rows `keep`, for tokens `input_ids` [T] at `position_ids` [T]."""
    inner = model.model
    x = inner.embed_tokens(input_ids)
    cos, sin = inner.rotary_emb(x, position_ids.unsqueeze(0))
    cos, sin = cos[0].unsqueeze(1), sin[0].unsqueeze(1)         # [T, 1, head_dim]: every head alike
    for layer in inner.layers:
        x = x + layer.self_attn(layer.input_layernorm(x), cos, sin, batch)
        x = x + layer.mlp(layer.post_attention_layernorm(x))
    return model.lm_head(inner.norm(x[keep]))
