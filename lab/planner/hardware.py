"""GPUs, models and links for the planner (vendor datasheets and published model configs)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Device:
    name: str
    flops: float          # dense bf16 FLOP/s (or this machine's measured peak)
    bandwidth: float      # memory bytes/s
    memory: float         # bytes


@dataclass(frozen=True)
class ModelSpec:
    name: str
    params: float         # parameters in the matrix multiplies
    layers: int
    hidden: int
    kv_heads: int
    head_dim: int
    dtype_bytes: int = 2

    @property
    def weight_bytes(self) -> float:
        return self.params * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes


GPUS = {
    "A100-80GB": Device("A100-80GB", 312e12, 2.039e12, 80e9),
    "H100-SXM": Device("H100-SXM", 989e12, 3.35e12, 80e9),
    "H200": Device("H200", 989e12, 4.8e12, 141e9),
    "L40S": Device("L40S", 362e12, 0.864e12, 48e9),
    "B200": Device("B200", 2250e12, 8.0e12, 180e9),
}

MODELS = {
    "OPT-13B": ModelSpec("OPT-13B", 13e9, 40, 5120, 40, 128),
    "Llama-3.1-8B": ModelSpec("Llama-3.1-8B", 8e9, 32, 4096, 8, 128),
    "Llama-3.1-70B": ModelSpec("Llama-3.1-70B", 70e9, 80, 8192, 8, 128),
    "Qwen2.5-7B": ModelSpec("Qwen2.5-7B", 7.6e9, 28, 3584, 4, 128),
    "SmolLM2-135M (fp32)": ModelSpec("SmolLM2-135M (fp32)", 106e6, 30, 576, 3, 64, 4),
}

LINKS = {  # bytes/s
    "NVLink 4": 900e9,
    "RDMA 400 Gb/s": 50e9,
    "PCIe Gen5 x16": 64e9,
    "TCP 10 GbE": 1.25e9,
}
