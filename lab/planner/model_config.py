"""A planner model from any local Hugging Face config.json (dense decoder-only transformers).

Parameters are counted from the shapes the config gives: attention (q, k, v, o with grouped KV heads)
and the MLP, gated (gate, up, down: Llama, Mistral, Qwen and most current models) or not (OPT's
fc1/fc2, named by `ffn_dim`). Mixture-of-experts configs are refused: the planner prices one dense
MLP per layer.
"""
from __future__ import annotations

import json
from pathlib import Path

from .hardware import ModelSpec

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float8_e4m3fn": 1}
REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


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
    if any(key in cfg for key in ("num_local_experts", "num_experts", "n_routed_experts")):
        raise ValueError(f"{path} describes a mixture-of-experts model; the planner prices dense models only")
    hidden, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    kv_heads = cfg.get("num_key_value_heads") or heads
    head_dim = cfg.get("head_dim") or hidden // heads
    attention = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim   # q and o, k and v
    if "ffn_dim" in cfg:
        mlp = 2 * hidden * cfg["ffn_dim"]
    elif "intermediate_size" in cfg:
        mlp = 3 * hidden * cfg["intermediate_size"]
    else:
        raise ValueError(f"{path} gives neither intermediate_size nor ffn_dim: the MLP's size is unknown")
    dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16")
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"{path}: unknown torch_dtype {dtype!r}; known: {', '.join(DTYPE_BYTES)}")
    name = cfg.get("_name_or_path") or path.parent.name
    return ModelSpec(name, float((attention + mlp) * cfg["num_hidden_layers"]), cfg["num_hidden_layers"], hidden,
                     kv_heads, head_dim, cfg["vocab_size"], DTYPE_BYTES[dtype],
                     tied_embeddings=bool(cfg.get("tie_word_embeddings", False)))
