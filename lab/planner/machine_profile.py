"""Describe this machine and the loaded model in the planner's terms, from measurements.

A device's peak FLOP/s and memory bandwidth come from the lab's roofline micro-benchmarks
(`machine_limits`); its efficiency curves from timing the model's own weight matrices, and causal
attention at the model's shapes, alone (no engine) at powers of two of tokens. The fixed costs per
layer are not measured here: `calibration.py` fits them on the engine's steps.
"""
from __future__ import annotations

import statistics
import time

import torch

from engine.core.model_loader import head_dim
from engine.core.packed_linear import PackedLinear

from .hardware import Curve, Device, ModelSpec

ROWS = tuple(2 ** k for k in range(12))   # 1 .. 2048 tokens per step


def _block_linears(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The blocks' matrix multiplies, as the engine runs them (plain, or on packed weights)."""
    return [m for m in model.model.layers.modules() if isinstance(m, (torch.nn.Linear, PackedLinear))]


def _params(linears: list[torch.nn.Module]) -> int:
    return sum(m.in_features * m.out_features for m in linears)


def model_spec(model: torch.nn.Module, name: str) -> ModelSpec:
    """The planner's description of a loaded transformers model (parameters counted, not typed)."""
    cfg = model.config
    return ModelSpec(name, _params(_block_linears(model)), cfg.num_hidden_layers,
                     cfg.hidden_size, cfg.num_key_value_heads, head_dim(cfg), cfg.vocab_size, model.dtype.itemsize,
                     tied_embeddings=bool(getattr(cfg, "tie_word_embeddings", False)))


@torch.inference_mode()
def gemm_seconds(model: torch.nn.Module, rows: int, repeats: int = 5) -> float:
    """Median of `repeats` passes through every block matrix multiply of the model with `rows` tokens
    (the median, like the engine's step times it is compared with, shrugs off a noisy neighbour)."""
    linears = _block_linears(model)
    inputs = {m.in_features: torch.randn(rows, m.in_features, dtype=model.dtype) for m in linears}
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for m in linears:
            m(inputs[m.in_features])
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gemm_curve(model: torch.nn.Module) -> Curve:
    """FLOP/s the model's block matrix multiplies reach at each power of two of rows."""
    params = _params(_block_linears(model))
    return tuple((rows, 2 * params * rows / gemm_seconds(model, rows, 5 if rows <= 256 else 3)) for rows in ROWS)


@torch.inference_mode()
def attention_seconds(model: torch.nn.Module, tokens: int, repeats: int = 5) -> float:
    """Median time of causal attention over a `tokens`-token prompt in one layer, as the engine calls it."""
    cfg = model.config
    q = torch.randn(1, cfg.num_attention_heads, tokens, head_dim(cfg), dtype=model.dtype)
    k, v = (torch.randn(1, cfg.num_key_value_heads, tokens, head_dim(cfg), dtype=model.dtype) for _ in range(2))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def attention_curve(model: torch.nn.Module) -> Curve:
    """FLOP/s causal attention reaches over prompts of 64 .. 2048 tokens (2 x hidden x n^2 per layer)."""
    hidden = model.config.hidden_size
    return tuple((n, 2 * hidden * n * n / attention_seconds(model, n)) for n in ROWS if n >= 64)


def measured_device(peak_flops: float, bandwidth: float, memory: float, gemm: list[Curve],
                    attention: list[Curve]) -> Device:
    """A Device from several rounds of measured curves: each point is its median over the rounds (a noisy
    neighbour can slow a whole round), as a share of the best FLOP/s seen (the square-matmul peak or the
    model's own largest multiplies, whichever is higher)."""
    def median(curves: list[Curve]) -> Curve:
        return tuple((n, statistics.median(c[i][1] for c in curves)) for i, (n, _) in enumerate(curves[0]))
    gemm_flops, attention_flops = median(gemm), median(attention)
    peak = max([peak_flops] + [f for _, f in gemm_flops])
    return Device("this machine", peak, bandwidth, memory, max_num_seqs=128,
                  gemm_efficiency=tuple((n, f / peak) for n, f in gemm_flops),
                  attention_efficiency=tuple((n, f / peak) for n, f in attention_flops))
