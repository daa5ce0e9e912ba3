"""Roofline step times: prefill is compute-bound, decode memory-bound, KV moves over a link.

Each step costs max(FLOPs / (peak x efficiency), bytes / (bandwidth x efficiency)). Attention is
counted: its FLOPs grow with the square of the prompt, and decode reads every context token's KV.
"""
from __future__ import annotations

from .hardware import Device, ModelSpec


def check_fits(model: ModelSpec, device: Device) -> None:
    if model.weight_bytes > device.memory:
        raise ValueError(f"{model.name} needs {model.weight_bytes / 1e9:.0f} GB for its weights, more than the "
                         f"{device.memory / 1e9:.0f} GB of one {device.name}; choose a larger GPU or a smaller model")


def step_seconds(model: ModelSpec, device: Device, flops: float, nbytes: float, efficiency: float) -> float:
    return max(flops / (device.flops * efficiency), nbytes / (device.bandwidth * efficiency))


def prefill_seconds(model: ModelSpec, device: Device, prompts: list[int], efficiency: float = 0.6,
                    context: list[int] | None = None) -> float:
    """One step prefilling `prompts` tokens of several requests (after `context` tokens each, if any)."""
    context = context or [0] * len(prompts)
    tokens = sum(prompts)
    attention = sum(2 * model.layers * model.hidden * n * (c + n) for n, c in zip(prompts, context))
    flops = 2 * model.params * tokens + attention
    nbytes = model.weight_bytes + model.kv_bytes_per_token * sum(c + n for n, c in zip(prompts, context))
    return step_seconds(model, device, flops, nbytes, efficiency)


def decode_seconds(model: ModelSpec, device: Device, batch: int, context_tokens: int,
                   efficiency: float = 0.6) -> float:
    """One decode step for `batch` sequences holding `context_tokens` of KV in all."""
    flops = 2 * model.params * batch + 4 * model.layers * model.hidden * context_tokens
    nbytes = model.weight_bytes + model.kv_bytes_per_token * context_tokens
    return step_seconds(model, device, flops, nbytes, efficiency)


def mixed_seconds(model: ModelSpec, device: Device, chunk: int, chunk_context: int, batch: int,
                  context_tokens: int, efficiency: float = 0.6) -> float:
    """A chunked-prefill step: `batch` decodes plus a `chunk` of one prompt, in one pass over the weights."""
    flops = (2 * model.params * (batch + chunk) + 4 * model.layers * model.hidden * context_tokens
             + 2 * model.layers * model.hidden * chunk * (chunk_context + chunk))
    nbytes = model.weight_bytes + model.kv_bytes_per_token * (context_tokens + chunk_context + chunk)
    return step_seconds(model, device, flops, nbytes, efficiency)


def transfer_seconds(model: ModelSpec, tokens: int, link_bytes_per_s: float) -> float:
    return model.kv_bytes_per_token * tokens / link_bytes_per_s
