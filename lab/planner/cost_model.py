"""Roofline step times: prefill is compute-bound, decode memory-bound, KV moves over a link.

A forward step costs max(FLOPs / (peak x efficiency), bytes / (bandwidth x efficiency)) plus the
device's fixed costs per layer (per step, per token and per decoding sequence), plus tensor
parallelism's all-reduces. Counted: the blocks' matrix multiplies over every token of the step, the
lm_head once per sampled token, attention (its FLOPs grow with the square of the prompt), the weights
and the KV read for every context token. A GPU preset has one efficiency
factor; a measured device (this machine) has its own curves, because small matrix multiplies reach a
small share of peak.
"""
from __future__ import annotations

from .hardware import Device, ModelSpec


def fits(model: ModelSpec, device: Device) -> bool:
    return model.weight_bytes <= device.memory


def check_fits(model: ModelSpec, device: Device) -> None:
    if not fits(model, device):
        raise ValueError(f"{model.name} needs {model.weight_bytes / 1e9:.0f} GB for its weights, more than the "
                         f"{device.memory / 1e9:.0f} GB of {'one ' if device.tp == 1 else ''}{device.name}; "
                         f"choose more or larger GPUs or a smaller model")


def step_seconds(model: ModelSpec, device: Device, tokens: int, sampled: int, decodes: int, attention_flops: float,
                 kv_tokens: int, efficiency: float) -> float:
    """One forward step over `tokens` tokens, `decodes` of them decoding sequences and `sampled` of them
    producing logits, reading `kv_tokens` of KV."""
    compute = (2 * model.params * tokens / device.gemm_share(tokens, efficiency)
               + 2 * model.lm_head_params * sampled / device.gemm_share(sampled, efficiency)
               + attention_flops / device.attention_share(tokens, efficiency)) / device.flops
    memory_efficiency = 1.0 if device.measured else efficiency  # a measured bandwidth is already achieved
    memory = (model.weight_bytes + model.kv_bytes_per_token * kv_tokens) / (device.bandwidth * memory_efficiency)
    fixed = device.layer_overhead + tokens * device.token_overhead + decodes * device.sequence_overhead
    return max(compute, memory) + model.layers * fixed + allreduce_seconds(model, device, tokens)


def allreduce_seconds(model: ModelSpec, device: Device, tokens: int) -> float:
    """Tensor parallelism sums two partial activations per layer across the GPUs (after attention and
    after the MLP); a ring all-reduce moves 2 (tp - 1) / tp of the activation bytes over each GPU's link."""
    if device.tp == 1:
        return 0.0
    activation = tokens * model.hidden * model.dtype_bytes
    return 2 * model.layers * 2 * (device.tp - 1) / device.tp * activation / device.nvlink


def _causal_attention_flops(model: ModelSpec, new: int, context: int) -> float:
    """QK^T and AV for `new` tokens attending to `context` earlier ones and to each other."""
    return 2 * model.layers * model.hidden * new * (context + new)


def prefill_seconds(model: ModelSpec, device: Device, prompts: list[int], efficiency: float = 0.6,
                    context: list[int] | None = None) -> float:
    """One step prefilling `prompts` tokens of several requests (after `context` tokens each, if any)."""
    context = context or [0] * len(prompts)
    attention = sum(_causal_attention_flops(model, n, c) for n, c in zip(prompts, context))
    return step_seconds(model, device, sum(prompts), len(prompts), 0, attention,
                        sum(c + n for n, c in zip(prompts, context)), efficiency)


def decode_seconds(model: ModelSpec, device: Device, batch: int, context_tokens: int,
                   efficiency: float = 0.6) -> float:
    """One decode step for `batch` sequences holding `context_tokens` of KV in all."""
    return step_seconds(model, device, batch, batch, batch, 4 * model.layers * model.hidden * context_tokens,
                        context_tokens, efficiency)


def mixed_seconds(model: ModelSpec, device: Device, chunk: int, chunk_context: int, batch: int,
                  context_tokens: int, efficiency: float = 0.6) -> float:
    """A chunked-prefill step: `batch` decodes plus a `chunk` of one prompt, in one pass over the weights."""
    attention = 4 * model.layers * model.hidden * context_tokens + _causal_attention_flops(model, chunk, chunk_context)
    return step_seconds(model, device, batch + chunk, batch + 1, batch, attention,
                        context_tokens + chunk_context + chunk, efficiency)


def transfer_seconds(model: ModelSpec, tokens: int, link_bytes_per_s: float, tp: int = 1) -> float:
    """The KV of `tokens` tokens over the link; with tensor parallelism each GPU sends its own heads'
    share over its own link, in parallel."""
    return model.kv_bytes_per_token * tokens / (link_bytes_per_s * tp)
