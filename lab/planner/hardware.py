"""GPUs, models and links for the planner (vendor datasheets and published model configs)."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace


Curve = tuple[tuple[int, float], ...]    # ((tokens, share of peak), ...) sorted by tokens
GiB = 2 ** 30
# A GPU preset's matrix multiplies over T tokens reach efficiency x T / (T + GEMM_HALF_TOKENS) of
# peak: few tokens leave the tensor cores idle (fitted to AIConfigurator's H200 decode steps).
GEMM_HALF_TOKENS = 150


def interpolate(curve: Curve, tokens: int) -> float:
    """A measured efficiency at `tokens`, linear in log(tokens) between the measured powers of two."""
    if tokens <= curve[0][0]:
        return curve[0][1]
    for (t0, e0), (t1, e1) in zip(curve, curve[1:]):
        if tokens <= t1:
            return e0 + math.log(tokens / t0) / math.log(t1 / t0) * (e1 - e0)
    return curve[-1][1]


@dataclass(frozen=True)
class Device:
    """A GPU preset (datasheet peaks, one efficiency factor) or a measured machine (its own curves)."""
    name: str
    flops: float          # dense bf16 FLOP/s (or this machine's measured peak)
    bandwidth: float      # memory bytes/s
    memory: float         # bytes (datasheets' "GB" of GPU memory are GiB)
    # Fixed costs the roofline does not see, per layer: every step (kernel launches, Python, op dispatch),
    # every token (the elementwise ops: norms, rotary, activation, residual adds) and every decoding
    # sequence (gathering its KV from the paged pool, its share of the attention call). 0 for the GPU
    # presets: vLLM and SGLang replay decode as CUDA graphs, fuse the elementwise ops and read paged KV
    # inside one attention kernel.
    layer_overhead: float = 0.0
    token_overhead: float = 0.0
    sequence_overhead: float = 0.0
    # Measured share of `flops` reached by the blocks' matrix multiplies over this many tokens, and by
    # causal attention over a prompt this long. Small multiplies reach a small share of peak.
    gemm_efficiency: Curve = ()
    attention_efficiency: Curve = ()
    nvlink: float = 0.0   # bytes/s from one GPU to its peers, one direction (tensor parallelism's all-reduces)
    tp: int = 1           # GPUs working as this one device (tensor parallelism)
    # A running batch's limits, as vLLM's OpenAI server sets them by default (get_batch_defaults in
    # vllm/engine/arg_utils.py): GPUs with >= 70 GiB other than the A100 get 1024 sequences and 8192
    # tokens a step, the other GPUs 256 and 2048, CPUs 128 and 2048.
    max_num_seqs: int = 256
    max_batched_tokens: int = 2048
    fp8_flops: float = 0.0   # dense FP8 FLOP/s; 0 where the GPU has no FP8 tensor cores (before Ada and Hopper)
    ep: int = 1              # of the `tp` GPUs, how many hold disjoint sets of experts (expert parallelism)
    price_per_hour: float = 0.0   # US$ per GPU-hour, of one GPU (a group keeps the per-GPU price)
    # Under expert parallelism, the busiest GPU's expert load over the mean (1.0: perfectly balanced).
    # An input and an assumption: real routers are skewed, and EPLB-style replication evens them out.
    expert_imbalance: float = 1.0

    @property
    def measured(self) -> bool:
        return bool(self.gemm_efficiency)

    def group(self, tp: int, ep: int = 1) -> Device:
        """`tp` GPUs as one tensor-parallel instance: their FLOP/s, bandwidth and memory add up; the
        cost model adds the all-reduces over `nvlink`. With `ep` > 1 a mixture-of-experts model's experts
        are split over `ep` of them (expert parallelism) and the MoE layers pay an all-to-all instead."""
        if tp < 1 or ep < 1 or tp % ep:
            raise ValueError(f"expert parallelism must divide the instance's {tp} GPUs, got EP{ep}")
        if tp == 1:
            return self
        return replace(self, name=f"{tp}x {self.name}", flops=self.flops * tp, bandwidth=self.bandwidth * tp,
                       memory=self.memory * tp, tp=tp, fp8_flops=self.fp8_flops * tp, ep=ep)

    def gemm_share(self, tokens: int, default: float) -> float:
        if self.measured:
            return interpolate(self.gemm_efficiency, tokens)
        return default * tokens / (tokens + GEMM_HALF_TOKENS)

    def attention_share(self, tokens: int, default: float) -> float:
        return interpolate(self.attention_efficiency, tokens) if self.attention_efficiency else default


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer. A mixture-of-experts model keeps its routed experts apart from `params`
    (the parameters every token runs through: attention, dense MLP layers, shared experts, routers):
    `moe_layers` layers of `experts` routed experts of `expert_params` each, `top_k` of them per token."""
    name: str
    params: float         # parameters in the transformer blocks' matrix multiplies (MoE: all but the routed experts)
    layers: int
    hidden: int
    kv_heads: int
    head_dim: int
    vocab: int            # the output projection (lm_head) is vocab x hidden, run once per sampled token
    dtype_bytes: int = 2            # of the weights (and the activations)
    tied_embeddings: bool = False   # the input embedding is the lm_head's matrix (else a second copy in memory)
    kv_dtype_bytes: int = 0         # of the KV cache; 0: as the weights
    # Mixture of experts (0: a dense model)
    moe_layers: int = 0
    experts: int = 0                # routed experts per MoE layer
    top_k: int = 0                  # routed experts each token goes to
    expert_params: float = 0.0      # parameters of one routed expert (gate, up, down)
    # KV elements per token and layer, as the attention stores them; 0: a key and a value per KV head
    # (2 x kv_heads x head_dim). MLA stores one latent and one rotary key: kv_lora_rank + qk_rope_head_dim.
    kv_dim: int = 0
    # Attention FLOPs per query-key pair and layer are 4 x attention_width (QK^T and AV); 0: hidden, as
    # for the dense presets. `decode_attention_width`: where decode computes it another way (MLA's
    # absorbed form attends over the latent); 0: as prefill.
    attention_width: int = 0
    decode_attention_width: int = 0

    @property
    def is_moe(self) -> bool:
        return self.moe_layers > 0

    @property
    def routed_params(self) -> float:
        """All routed experts' parameters, every MoE layer."""
        return self.moe_layers * self.experts * self.expert_params

    @property
    def embedding_params(self) -> int:
        """The input embedding and the lm_head (one matrix where they are tied)."""
        return self.lm_head_params * (1 if self.tied_embeddings else 2)

    @property
    def total_params(self) -> float:
        return self.params + self.routed_params + self.embedding_params

    @property
    def active_params(self) -> float:
        """Parameters one token uses, counted as the model cards count them: everything but the routed
        experts it is not sent to (embeddings included)."""
        return self.params + self.moe_layers * self.top_k * self.expert_params + self.embedding_params

    @property
    def lm_head_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def weight_bytes(self) -> float:
        """Bytes a forward step reads at most: the blocks, every expert, and the lm_head (the embedding is a
        lookup). A MoE step reads only the experts its tokens go to (cost_model)."""
        return (self.params + self.routed_params + self.lm_head_params) * self.dtype_bytes

    @property
    def memory_bytes(self) -> float:
        """Bytes the weights hold in memory: what a step reads, plus the embedding table if it is its own."""
        return self.weight_bytes + (0 if self.tied_embeddings else self.lm_head_params * self.dtype_bytes)

    @property
    def kv_bytes_per_token(self) -> int:
        per_layer = self.kv_dim or 2 * self.kv_heads * self.head_dim
        return self.layers * per_layer * (self.kv_dtype_bytes or self.dtype_bytes)


BIG = dict(max_num_seqs=1024, max_batched_tokens=8192)   # vLLM's defaults on GPUs of >= 70 GiB but the A100
# US$ per GPU-hour: ASSUMED round figures for on-demand cloud GPUs (not quoted from a price list; prices
# vary by provider, region and commitment). Only the per-dollar figures use them; `--price`,
# `--prefill-price` and `--decode-price` replace them.
ASSUMED_PRICE_PER_HOUR = {"A100-80GB": 1.8, "H100-SXM": 2.5, "H200": 3.5, "L40S": 1.0, "B200": 5.0}
GPUS = {  # NVLink per GPU, one direction: 300 / 450 / 450 / 900 GB/s (the datasheets' totals count both);
          # the L40S has none and talks over PCIe Gen4 x16, 32 GB/s each way
    "A100-80GB": Device("A100-80GB", 312e12, 2.039e12, 80 * GiB, nvlink=300e9),
    "H100-SXM": Device("H100-SXM", 989e12, 3.35e12, 80 * GiB, nvlink=450e9, fp8_flops=1979e12, **BIG),
    "H200": Device("H200", 989e12, 4.8e12, 141 * GiB, nvlink=450e9, fp8_flops=1979e12, **BIG),
    "L40S": Device("L40S", 362e12, 0.864e12, 48 * GiB, nvlink=32e9, fp8_flops=733e12),
    "B200": Device("B200", 2250e12, 8.0e12, 180 * GiB, nvlink=900e9, fp8_flops=4500e12, **BIG),
}
GPUS = {name: replace(gpu, price_per_hour=ASSUMED_PRICE_PER_HOUR[name]) for name, gpu in GPUS.items()}

# Block parameters from each model's published config (attention q/k/v/o + MLP, times layers).
MODELS = {
    "OPT-13B": ModelSpec("OPT-13B", 12.58e9, 40, 5120, 40, 128, 50272, tied_embeddings=True),
    "Llama-3.1-8B": ModelSpec("Llama-3.1-8B", 6.98e9, 32, 4096, 8, 128, 128256),
    "Llama-3.1-70B": ModelSpec("Llama-3.1-70B", 68.45e9, 80, 8192, 8, 128, 128256),
    "Qwen2.5-7B": ModelSpec("Qwen2.5-7B", 6.53e9, 28, 3584, 4, 128, 152064),
    "SmolLM2-135M (fp32)": ModelSpec("SmolLM2-135M (fp32)", 106.2e6, 30, 576, 3, 64, 49152, 4,
                                     tied_embeddings=True),
}

LINKS = {  # bytes/s, one direction (a KV copy uses one); NVLink per GPU as the datasheets give it, halved:
          # A100 NVLink 3 600 GB/s, H100/H200 NVLink 4 900 GB/s, both directions together
    "NVLink 3": 300e9,
    "NVLink 4": 450e9,
    "RDMA 400 Gb/s": 50e9,
    "PCIe Gen5 x16": 64e9,
    "TCP 10 GbE": 1.25e9,
}
