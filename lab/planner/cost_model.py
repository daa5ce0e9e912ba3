"""Step times as the sum of the step's operations, each at its own roofline.

A forward step is a sequence of kernels, so its time is their sum, each max(FLOPs / (peak x share),
bytes / (bandwidth x efficiency)):
- the blocks' matrix multiplies over every token of the step, against reading their weights once;
- the lm_head, once per sampled token, against reading it once;
- prefill attention (compute: its FLOPs grow with the square of the prompt);
- decode attention, which reads every context token's KV of every decoding sequence (memory);
- tensor parallelism's all-reduces, two per layer, each a fixed latency plus the activation bytes
  over one direction of the link;
- a measured device's fixed costs per layer (per step, per token and per decoding sequence).
One max over the whole step would let a prompt chunk's matrix multiplies hide the decodes' KV reads,
which a separate attention kernel never does. A GPU preset reaches `efficiency` of its peaks, its
matrix multiplies less over few tokens (gemm_share); a measured device (this machine) has its own
curves. Fitted against AIConfigurator 0.12's step costs for vLLM on H200 (tests/test_planner.py).

A mixture-of-experts model's routed experts are a matrix multiply of their own: FLOPs from the top-k
experts each token goes to, bytes from the distinct experts the step's tokens activate (activated_experts),
each expert's multiply over its share of the tokens. With expert parallelism (Device.ep > 1) the busiest
GPU carries `expert_imbalance` times the mean expert load, and each MoE layer sends its tokens to their
experts' GPUs and back (dispatch and combine, two all-to-alls over NVLink) in place of the MLP's
all-reduce. A checkpoint with FP8 weights (1 byte) runs its matrix multiplies at the GPU's FP8 peak where it
has one; attention stays at the bf16 peak.
"""
from __future__ import annotations

from dataclasses import replace

from .hardware import Device, ModelSpec

# One all-reduce's fixed cost inside a node (launch and synchronisation): an assumption of this model,
# fitted with the 70B TP4 decode step above; its bytes are counted separately.
ALLREDUCE_LATENCY_S = 10e-6


def fits(model: ModelSpec, device: Device) -> bool:
    return model.memory_bytes <= device.memory


def check_fits(model: ModelSpec, device: Device) -> None:
    if not fits(model, device):
        raise ValueError(f"{model.name} needs {model.memory_bytes / 2**30:.0f} GiB for its weights, more than the "
                         f"{device.memory / 2**30:.0f} GiB of {'one ' if device.tp == 1 else ''}{device.name}; "
                         f"choose more or larger GPUs or a smaller model")


def _matmul(flops: float, weight_bytes: float, device: Device, tokens: int, efficiency: float) -> float:
    return max(flops / (device.flops * device.gemm_share(tokens, efficiency)),
               weight_bytes / _bandwidth(device, efficiency))


def _bandwidth(device: Device, efficiency: float) -> float:
    return device.bandwidth * (1.0 if device.measured else efficiency)   # a measured bandwidth is achieved


def step_seconds(model: ModelSpec, device: Device, tokens: int, sampled: int, decodes: int,
                 prefill_attention_flops: float, decode_context: int, efficiency: float) -> float:
    """One forward step over `tokens` tokens, `decodes` of them decoding sequences that hold
    `decode_context` tokens of KV in all, and `sampled` of them producing logits."""
    weights = device   # an FP8 checkpoint's matrix multiplies run on FP8 tensor cores; its attention does not
    if model.dtype_bytes == 1 and device.fp8_flops > device.flops:
        weights = replace(device, flops=device.fp8_flops)
    blocks = _matmul(2 * model.params * tokens, model.params * model.dtype_bytes, weights, tokens, efficiency)
    if model.is_moe:
        blocks += experts_seconds(model, weights, tokens, efficiency)
    head = _matmul(2 * model.lm_head_params * sampled, model.lm_head_params * model.dtype_bytes, weights, sampled,
                   efficiency) if sampled else 0.0
    prefill_attention = prefill_attention_flops / (device.flops * device.attention_share(tokens, efficiency))
    decode_attention = decode_context * _kv_token_seconds(model, device, decodes, efficiency)
    fixed = device.layer_overhead + tokens * device.token_overhead + decodes * device.sequence_overhead
    return (blocks + head + prefill_attention + decode_attention + model.layers * fixed
            + allreduce_seconds(model, device, tokens))


def activated_experts(experts: int, top_k: int, tokens: int) -> float:
    """Distinct experts that `tokens` tokens, each routed to `top_k` of `experts`, activate in one layer,
    in expectation. An assumption: each token picks its experts uniformly and independently of the other
    tokens, so an expert is missed by all of them with probability (1 - k/E)^B: E x (1 - (1 - k/E)^B),
    k at one token and nearly all E at many. Real routers are skewed (expert_imbalance)."""
    if tokens <= 0:
        return 0.0
    return experts * (1 - (1 - top_k / experts) ** tokens)


def experts_seconds(model: ModelSpec, device: Device, tokens: int, efficiency: float) -> float:
    """The routed experts' matrix multiplies of a step of `tokens` tokens, every MoE layer: 2 x top_k x
    expert_params FLOPs a token, against reading the activated experts' weights once. Each activated
    expert multiplies its share of the tokens (tokens x top_k / activated), the size its GEMM runs at.
    Under expert parallelism the busiest GPU sets the pace: `expert_imbalance` x the mean load. With
    EP > 1, the dispatch and combine all-to-alls of every MoE layer are added."""
    if not model.is_moe or tokens <= 0:
        return 0.0
    active = activated_experts(model.experts, model.top_k, tokens)
    per_expert = max(1, round(tokens * model.top_k / active))
    flops = 2 * model.moe_layers * model.top_k * model.expert_params * tokens
    weight_bytes = model.moe_layers * active * model.expert_params * model.dtype_bytes
    seconds = max(flops / (device.flops * device.gemm_share(per_expert, efficiency)),
                  weight_bytes / _bandwidth(device, efficiency))
    if device.ep > 1:
        seconds = seconds * device.expert_imbalance + alltoall_seconds(model, device, tokens)
    return seconds


def alltoall_seconds(model: ModelSpec, device: Device, tokens: int) -> float:
    """Expert parallelism's traffic, every MoE layer: dispatch sends each token's activation to the GPUs
    of its top_k experts, combine brings the k results back, each tokens x hidden x bytes x top_k over the
    instance (activations in the checkpoint's torch_dtype). Each GPU sends its 1/ep of it, of which
    (ep - 1)/ep leaves the GPU, over its own NVLink in one direction; plus one fixed latency each."""
    if device.ep <= 1:
        return 0.0
    activation_bytes = model.kv_dtype_bytes or model.dtype_bytes
    each_way = tokens * model.hidden * activation_bytes * model.top_k
    per_gpu = each_way / device.ep * (device.ep - 1) / device.ep
    return 2 * model.moe_layers * (ALLREDUCE_LATENCY_S + per_gpu / device.nvlink)


def _kv_token_seconds(model: ModelSpec, device: Device, decodes: int, efficiency: float) -> float:
    """Decode attention's time per token of KV it reads: its FLOPs or its bytes, whichever bounds it."""
    width = model.decode_attention_width or model.attention_width or model.hidden
    return max(4 * model.layers * width / (device.flops * device.attention_share(max(decodes, 1), efficiency)),
               model.kv_bytes_per_token / _bandwidth(device, efficiency))


def allreduce_seconds(model: ModelSpec, device: Device, tokens: int) -> float:
    """Tensor parallelism sums two partial activations per layer across the GPUs (after attention and
    after the MLP); a ring all-reduce moves 2 (tp - 1) / tp of the activation bytes over each GPU's
    link, in one direction."""
    if device.tp == 1:
        return 0.0
    activation = tokens * model.hidden * model.dtype_bytes
    # under expert parallelism a MoE layer's MLP ends in the combine all-to-all instead (alltoall_seconds)
    count = 2 * model.layers - (model.moe_layers if device.ep > 1 else 0)
    return count * (ALLREDUCE_LATENCY_S + 2 * (device.tp - 1) / device.tp * activation / device.nvlink)


def _causal_attention_flops(model: ModelSpec, new: int, context: int) -> float:
    """QK^T and AV for `new` tokens attending to `context` earlier ones and to each other."""
    return 2 * model.layers * (model.attention_width or model.hidden) * new * (context + new)


def prefill_seconds(model: ModelSpec, device: Device, prompts: list[int], efficiency: float = 0.7,
                    context: list[int] | None = None) -> float:
    """One step prefilling `prompts` tokens of several requests (after `context` tokens each, if any)."""
    context = context or [0] * len(prompts)
    attention = sum(_causal_attention_flops(model, n, c) for n, c in zip(prompts, context))
    return step_seconds(model, device, sum(prompts), len(prompts), 0, attention, 0, efficiency)


def decode_seconds(model: ModelSpec, device: Device, batch: int, context_tokens: int,
                   efficiency: float = 0.7) -> float:
    """One decode step for `batch` sequences holding `context_tokens` of KV in all."""
    seconds, per_kv_token = decode_cost(model, device, batch, efficiency)
    return seconds + per_kv_token * context_tokens


def decode_cost(model: ModelSpec, device: Device, batch: int, efficiency: float = 0.7) -> tuple[float, float]:
    """A decode step of `batch` sequences as (seconds without their KV, seconds per token of KV they hold):
    the step is linear in the KV it reads, so a simulation of millions of steps prices each batch size once."""
    return (step_seconds(model, device, batch, batch, batch, 0.0, 0, efficiency),
            _kv_token_seconds(model, device, batch, efficiency))


def mixed_seconds(model: ModelSpec, device: Device, chunk: int, chunk_context: int, batch: int,
                  context_tokens: int, efficiency: float = 0.7) -> float:
    """A chunked-prefill step: `batch` decodes plus a `chunk` of one prompt, in one pass over the weights
    but with both attentions."""
    return step_seconds(model, device, batch + chunk, batch + 1, batch,
                        _causal_attention_flops(model, chunk, chunk_context), context_tokens, efficiency)


def transfer_seconds(model: ModelSpec, tokens: int, link_bytes_per_s: float, tp: int = 1) -> float:
    """The KV of `tokens` tokens over the link; with tensor parallelism each GPU sends its own heads'
    share over its own link, in parallel."""
    return model.kv_bytes_per_token * tokens / (link_bytes_per_s * tp)
