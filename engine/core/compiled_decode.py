"""The decode step as one compiled graph (torch.compile, inductor), on CPUs, as vLLM compiles its own.

An eager decode step runs some forty small operators per layer (norms, rotary, residual adds, the
attention's gather and masks), each dispatched from Python; compiled, inductor fuses them into a few
C++ loops per layer. Each linear layer's product is a GEMM on the layer's plain weight (a PackedLinear
that kept it traces as a plain product), frozen into the graph as a constant, which inductor lays out
once and computes either with its own C++ template (tiled for this CPU's vector width) or with oneDNN's
packed linear, whichever its benchmark at compile time finds faster. On an AVX2-only 2-core AMD EPYC
the template won for every layer; the fp32 step, eager -> compiled, same greedy tokens: batch 6
55.7-61.5 -> 41.0-42.9 ms, one sequence 39.7-40.6 -> 25.0-26.1 ms (two runs of
benchmarks/one_core_vs_two.py).

The graph covers the common step only: every sequence decodes one token and all contexts fit one padded
group (model_runner's grouping). It does not write the KV pool: it returns each layer's new key and
value and the runner writes them after (one copy per pool for all layers), so the graph has no side
effects. Sizes are dynamic (one compile serves every batch and context width); a batch or width of one
is padded to two, since torch.compile specializes sizes 0 and 1. The compile happens once, at start
(about 2.5 minutes for the bundled model on 2 cores, which is why it is opt-in); a step that would need
another one runs eagerly instead.
"""
from __future__ import annotations

import logging
import time
import warnings

import torch
import torch._inductor.config
from transformers.models.llama.modeling_llama import rotate_half

from .kv_cache import PagedKVCache
from .paged_attention import decode_attention_by_matmul

log = logging.getLogger("pdlab.engine")

MIN_SIZE = 2   # torch.compile specializes sizes 0 and 1: batches and widths are padded to this
INDUCTOR_SETTINGS = {
    # The weights become constants, which inductor's own GEMMs need to lay them out once, at compile.
    "freezing": True,
    # Each linear's GEMM: inductor's C++ template (tiled for this CPU's vector width) or oneDNN's packed
    # linear, whichever its benchmark at compile finds faster.
    "max_autotune": True,
    "max_autotune_gemm_backends": "CPP,ATEN",
    "autotune_num_choices_displayed": 0, "max_autotune_report_choices_stats": False,   # no tables on stderr
    "compile_threads": 1,   # no pool of compile processes that could outlive this one
}


class CompiledDecode:
    def __init__(self, model: torch.nn.Module, cache: PagedKVCache):
        """`model` is a fused decoder (fused_decoder.fuse_layers) on packed linears. The cache's pools are
        read at each call: a transport may move them (into shared memory) after this."""
        self.model, self.cache = model, cache
        self.steps = 0   # steps run through the graph
        attn = model.model.layers[0].self_attn
        self.heads, self.kv_heads, self.head_dim = attn.heads, attn.kv_heads, attn.head_dim
        self.scaling = attn.scaling if attn.scaling is not None else self.head_dim ** -0.5
        self._graph = torch.compile(self._forward, fullgraph=True)
        started = time.perf_counter()
        self._warm_up()
        log.info("compiled the decode step in %.1f s", time.perf_counter() - started)

    @torch.inference_mode()
    def _warm_up(self) -> None:
        """Compile now, with every size dynamic, so that no request waits for it. The inputs are made in
        inference mode, as the runner's are: the graph's guards check it."""
        ids = torch.zeros(MIN_SIZE, dtype=torch.long)
        slots = torch.zeros(MIN_SIZE, MIN_SIZE, dtype=torch.long)   # slot 0: the never-lent padding block
        valid = torch.ones(MIN_SIZE, MIN_SIZE, dtype=torch.bool)
        for tensor, dims in ((ids, (0,)), (slots, (0, 1)), (valid, (0, 1))):
            for dim in dims:
                torch._dynamo.mark_dynamic(tensor, dim)
        positions = ids.clone()
        torch._dynamo.mark_dynamic(positions, 0)
        with torch._inductor.config.patch(INDUCTOR_SETTINGS), warnings.catch_warnings():
            # inductor's own use of a deprecated torch API, nothing a user can act on
            warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
            self._graph(ids, positions, slots, valid, self.cache.key, self.cache.value)

    def __call__(self, input_ids: torch.Tensor, position_ids: torch.Tensor, slots: torch.Tensor,
                 valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """One decode token per sequence: `input_ids`, `position_ids` [n]; `slots` [n, width], the pool
        slots of each sequence's earlier tokens, `valid` [n, width] which of them count. Returns the
        logits [n, vocab] and the new keys and values [layers, n, kv_heads, head_dim]; None if this
        step would need a new compile (the caller runs it eagerly)."""
        n, width = slots.shape
        if n < MIN_SIZE:   # repeat the row: its copy's outputs are dropped
            input_ids, position_ids = input_ids.repeat(MIN_SIZE), position_ids.repeat(MIN_SIZE)
            slots, valid = slots.repeat(MIN_SIZE, 1), valid.repeat(MIN_SIZE, 1)
        if width < MIN_SIZE:
            slots = torch.nn.functional.pad(slots, (0, MIN_SIZE - width))
            valid = torch.nn.functional.pad(valid, (0, MIN_SIZE - width))
        try:
            with torch.compiler.set_stance("fail_on_recompile"):
                logits, keys, values = self._graph(input_ids, position_ids, slots, valid,
                                                   self.cache.key, self.cache.value)
        except RuntimeError as exc:   # what torch raises for a needed recompile under this stance
            log.warning("decode step run eagerly: the compiled graph did not take it (%s)", exc)
            return None
        self.steps += 1
        return logits[:n], keys[:, :n], values[:, :n]

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor, valid: torch.Tensor,
                 key_pool: torch.Tensor, value_pool: torch.Tensor):
        """What the graph computes: fused_decoder.decoder_forward for one decode token per sequence, its
        attention (the eager one's function) over the gathered context with the token's own key and value
        appended, since the graph does not write them into the pool first."""
        inner = self.model.model
        n, width = slots.shape
        heads, kv_heads, dim = self.heads, self.kv_heads, self.head_dim
        x = inner.embed_tokens(ids)
        cos, sin = inner.rotary_emb(x, positions.unsqueeze(0))
        cos, sin = cos[0].unsqueeze(1), sin[0].unsqueeze(1)
        mask = torch.cat([valid, valid.new_ones(n, 1)], dim=1)[:, None, None, :]   # [n, 1, 1, width + 1]
        flat = slots.reshape(-1)
        new_keys, new_values = [], []
        for index, layer in enumerate(inner.layers):
            attn = layer.self_attn
            qkv = attn.qkv_proj(layer.input_layernorm(x)).view(n, heads + 2 * kv_heads, dim)
            qk = qkv[:, :heads + kv_heads]
            qk = qk * cos + rotate_half(qk) * sin
            q, k, v = qk[:, :heads], qk[:, heads:], qkv[:, heads + kv_heads:]
            context_k = torch.cat([key_pool[index].index_select(0, flat).view(n, width, kv_heads, dim),
                                   k.unsqueeze(1)], dim=1).transpose(1, 2)               # [n, kv, width + 1, dim]
            context_v = torch.cat([value_pool[index].index_select(0, flat).view(n, width, kv_heads, dim),
                                   v.unsqueeze(1)], dim=1).transpose(1, 2)
            out = decode_attention_by_matmul(q.unsqueeze(2), context_k, context_v, mask, self.scaling)
            x = x + attn.o_proj(out.reshape(n, heads * dim))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
            new_keys.append(k)
            new_values.append(v)
        return self.model.lm_head(inner.norm(x)), torch.stack(new_keys), torch.stack(new_values)
