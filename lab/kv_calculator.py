"""KV cache size per model and its transfer time over each kind of link."""
from __future__ import annotations

from dataclasses import dataclass

DTYPE_BYTES = {"fp32": 4, "bf16 / fp16": 2, "fp8": 1}


@dataclass(frozen=True)
class ModelShape:
    layers: int
    kv_heads: int
    head_dim: int
    latent: bool = False   # MLA (DeepSeek): one compressed latent per layer instead of K and V

    def bytes_per_token(self, dtype_bytes: int) -> int:
        factor = 1 if self.latent else 2
        return factor * self.layers * self.kv_heads * self.head_dim * dtype_bytes


# From each model's published config.json.
MODELS = {
    "SmolLM2-135M": ModelShape(30, 3, 64),
    "Llama-3.1-8B": ModelShape(32, 8, 128),
    "Llama-3.1-70B": ModelShape(80, 8, 128),
    "Qwen2.5-7B": ModelShape(28, 4, 128),
    "Qwen2.5-72B": ModelShape(80, 8, 128),
    "Mistral-7B": ModelShape(32, 8, 128),
    "DeepSeek-V3 (MLA 512+64)": ModelShape(61, 1, 576, latent=True),
}

# Bandwidth in GB/s, one direction (a KV copy uses one): vendor figures, line rates, or measurements,
# as each link's name in lab/texts (link_<key>) says.
LINKS = {
    "nvlink4": 450.0,       # NVLink 4 (H100/H200): 900 GB/s per GPU is both directions together
    "rdma_8x400": 190.0,    # Mooncake Transfer Engine, measured over 8x400 Gb/s RoCE
    "rdma_4x200": 87.0,     # ... and over 4x200 Gb/s
    "pcie5": 64.0,          # PCIe Gen5 x16
    "rdma_400": 50.0,       # one 400 Gb/s NIC, line rate
    "nvme": 7.0,            # one fast NVMe SSD
    "tcp_10g": 1.25,        # 10 GbE, line rate
}


def kv_bytes(model: ModelShape, dtype_bytes: int, tokens: int) -> int:
    if tokens < 0:
        raise ValueError(f"tokens must be >= 0, got {tokens}")
    return model.bytes_per_token(dtype_bytes) * tokens


def transfer_seconds(nbytes: int, gb_per_s: float) -> float:
    return nbytes / (gb_per_s * 1e9)
