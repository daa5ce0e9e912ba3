"""A planner model from any local Hugging Face config.json: dense decoder-only transformers and
mixture-of-experts ones (Qwen3-MoE, DeepSeek-V3 with MLA, Mixtral).

Parameters are counted from the shapes the config gives: attention (q, k, v, o with grouped KV heads, or
DeepSeek's multi-head latent attention) and the MLP, gated (gate, up, down: Llama, Mistral, Qwen and most
current models) or not (OPT's fc1/fc2, named by `ffn_dim`). A MoE layer has a router (hidden x experts),
its routed experts (each a gated MLP of `moe_intermediate_size`, Mixtral's of `intermediate_size`) and
DeepSeek's shared experts; layers the config keeps dense (DeepSeek's first `first_k_dense_replace`,
Qwen's `mlp_only_layers`) have a dense MLP of `intermediate_size`. Norms and biases are left out (well
under 0.1% of any of these models). A checkpoint whose quantization_config declares FP8 weights has
1-byte weights; its KV cache stays in `torch_dtype`.

The MoE models the planner ships are the published config.json files in configs/ (MOE_MODELS).
"""
from __future__ import annotations

import json
from pathlib import Path

from .hardware import ModelSpec

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float8_e4m3fn": 1}
REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
CONFIGS = Path(__file__).parent / "configs"
EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")


def model_from_config(path: str | Path) -> ModelSpec:
    """Raises ValueError naming what is wrong with the file."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read a model config from {path}: {exc}") from None
    cfg = cfg.get("text_config", cfg)   # multimodal configs nest the language model's
    missing = [key for key in REQUIRED if key not in cfg]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}: the planner needs {', '.join(REQUIRED)}")
    if str(cfg.get("model_type", "")).startswith("llama4"):
        # Llama 4 interleaves dense and MoE layers with its own keys (interleave_moe_layer_step,
        # intermediate_size_mlp); counting it as Mixtral would be wrong
        raise ValueError(f"{path}: Llama 4's mixture-of-experts layout is not modelled yet")
    hidden, heads, layers = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"]
    kv_heads = cfg.get("num_key_value_heads") or heads
    head_dim = cfg.get("head_dim") or hidden // heads
    dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16")
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"{path}: unknown torch_dtype {dtype!r}; known: {', '.join(DTYPE_BYTES)}")
    name = cfg.get("_name_or_path") or path.parent.name
    if any(key in cfg for key in EXPERT_KEYS):
        return _moe(cfg, path, name, DTYPE_BYTES[dtype])
    attention = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim   # q and o, k and v
    if "ffn_dim" in cfg:
        mlp = 2 * hidden * cfg["ffn_dim"]
    elif "intermediate_size" in cfg:
        mlp = 3 * hidden * cfg["intermediate_size"]
    else:
        raise ValueError(f"{path} gives neither intermediate_size nor ffn_dim: the MLP's size is unknown")
    return ModelSpec(name, float((attention + mlp) * layers), layers, hidden,
                     kv_heads, head_dim, cfg["vocab_size"], DTYPE_BYTES[dtype],
                     tied_embeddings=bool(cfg.get("tie_word_embeddings", False)))


def _moe(cfg: dict, path: Path, name: str, dtype_bytes: int) -> ModelSpec:
    hidden, heads, layers = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"]
    experts = next(cfg[key] for key in EXPERT_KEYS if key in cfg)
    top_k = cfg.get("num_experts_per_tok")
    if not experts or not top_k or top_k > experts:
        raise ValueError(f"{path} describes a mixture-of-experts model but not how many of its {experts} experts "
                         f"a token goes to: it needs num_experts_per_tok between 1 and {experts}")
    # Mixtral's experts are intermediate_size wide; Qwen's and DeepSeek's name their own width
    expert_width = cfg.get("moe_intermediate_size") or cfg.get("intermediate_size")
    if not expert_width:
        raise ValueError(f"{path} gives neither moe_intermediate_size nor intermediate_size: "
                         "the experts' size is unknown")
    expert = 3 * hidden * expert_width
    dense_mlp = 3 * hidden * cfg.get("intermediate_size", expert_width)
    # which layers route: DeepSeek keeps the first first_k_dense_replace dense and routes every
    # moe_layer_freq-th after; Qwen routes every decoder_sparse_step-th but its mlp_only_layers
    if "first_k_dense_replace" in cfg or "moe_layer_freq" in cfg:
        first, freq = cfg.get("first_k_dense_replace", 0), cfg.get("moe_layer_freq", 1)
        moe_layers = sum(1 for i in range(layers) if i >= first and i % freq == 0)
    else:
        step, dense_only = cfg.get("decoder_sparse_step", 1), set(cfg.get("mlp_only_layers") or [])
        moe_layers = sum(1 for i in range(layers) if i not in dense_only and (i + 1) % step == 0)
    shared = cfg.get("n_shared_experts", 0) * expert + 3 * hidden * cfg.get("shared_expert_intermediate_size", 0)
    router = hidden * experts
    if "kv_lora_rank" in cfg:   # DeepSeek's multi-head latent attention
        latent, rope = cfg["kv_lora_rank"], cfg["qk_rope_head_dim"]
        nope, v_dim = cfg["qk_nope_head_dim"], cfg["v_head_dim"]
        q_rank = cfg.get("q_lora_rank")
        q = hidden * q_rank + q_rank * heads * (nope + rope) if q_rank else hidden * heads * (nope + rope)
        attention = q + hidden * (latent + rope) + latent * heads * (nope + v_dim) + heads * v_dim * hidden
        kv_heads, head_dim, kv_dim = 1, latent + rope, latent + rope   # one latent + one rotary key a token
        # prefill attends with the decompressed heads (QK over nope + rope, AV over v); decode in the
        # absorbed form over the latent (QK over latent + rope, AV over the latent): FLOPs = 4 x width
        width, decode_width = heads * (nope + rope + v_dim) // 2, heads * (2 * latent + rope) // 2
    else:
        kv_heads = cfg.get("num_key_value_heads") or heads
        head_dim = cfg.get("head_dim") or hidden // heads
        attention = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim
        kv_dim, width, decode_width = 0, heads * head_dim, 0
    params = layers * attention + (layers - moe_layers) * dense_mlp + moe_layers * (shared + router)
    fp8 = (cfg.get("quantization_config") or {}).get("quant_method") == "fp8"
    return ModelSpec(name, float(params), layers, hidden, kv_heads, head_dim, cfg["vocab_size"],
                     1 if fp8 else dtype_bytes, tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
                     kv_dtype_bytes=dtype_bytes if fp8 else 0, moe_layers=moe_layers, experts=experts, top_k=top_k,
                     expert_params=float(expert), kv_dim=kv_dim, attention_width=width,
                     decode_attention_width=decode_width)


MOE_MODELS = {spec.name: spec for spec in (model_from_config(f) for f in sorted(CONFIGS.glob("*.json")))}
