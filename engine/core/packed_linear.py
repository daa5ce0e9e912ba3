"""The model's linear layers on oneDNN's packed weights, on CPUs.

PyTorch's CPU build runs `nn.Linear` through MKL's sgemm, which is slow for the few rows of a decode
step: measured on a 2-core AMD EPYC, a [6 x 576] x [576 x 1536] product took 238 us through MKL and
97 us through oneDNN with the weight reordered once into its blocked layout (the route vLLM's CPU
backend and torch.compile's CPU code take). The whole decode step at batch 6 went from 129 to 63 ms,
with the same greedy tokens. The weight is reordered once, at load; the layer computes the same
product.
"""
from __future__ import annotations

import torch

BATCH_HINT = 8   # rows oneDNN tunes the layout for; any number of rows is computed correctly


class PackedLinear(torch.nn.Module):
    """`keep_weight`: also keep the plain weight, which the compiled decode step's own GEMMs read
    (compiled_decode.py); it costs the layer's weight a second time in memory."""

    def __init__(self, linear: torch.nn.Linear, keep_weight: bool = False):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # Buffers, not plain attributes: torch.compile's freezing makes them constants (compiled_decode.py).
        self.register_buffer("packed", torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), BATCH_HINT))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach())
        self.register_buffer("weight", linear.weight.detach() if keep_weight else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight is not None and torch.compiler.is_compiling():
            # Traced by compiled_decode.py: a plain product, whose GEMM inductor writes for this CPU.
            return torch.nn.functional.linear(x, self.weight, self.bias)
        rows = x.reshape(-1, self.in_features)
        out = torch.ops.mkldnn._linear_pointwise(rows, self.packed, self.bias, "none", [], "")
        return out.view(*x.shape[:-1], self.out_features)


def can_pack(device: torch.device, dtype: torch.dtype) -> bool:
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    if dtype == torch.bfloat16:   # oneDNN's bf16 linears need AVX-512 (or AVX-NE-CONVERT); AVX2-only CPUs lack them
        return torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return dtype == torch.float32


def pack_linear_layers(model: torch.nn.Module, keep_weights: bool = False) -> int:
    """Replace every nn.Linear in place (a tied output layer gets its own packed copy; the
    embedding keeps the original). Returns how many were replaced."""
    replaced = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.Linear):
                setattr(module, name, PackedLinear(child, keep_weights))
                replaced += 1
    return replaced
