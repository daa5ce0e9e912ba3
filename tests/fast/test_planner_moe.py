"""The planner's mixture-of-experts models, expert parallelism and different GPUs per phase (model-free:
the models are their published config.json shapes, lab/planner/configs/)."""
import json
from dataclasses import replace

import pytest

from lab.plan import main as plan_cli
from lab.planner import cost_model as cm
from lab.planner.hardware import GPUS, LINKS, MODELS, Device, ModelSpec
from lab.planner.model_config import MOE_MODELS, model_from_config
from lab.planner.scenario import SLO, Hardware, Placement, Workload
from lab.planner.search import PlacementResult, candidates, plan
from lab.planner.simulator import simulate

# A toy MoE: 4 layers, 2 of them MoE with 8 experts of 1e6 parameters, 2 per token; 1e7 other parameters.
TOY = ModelSpec("toy-moe", params=1e7, layers=4, hidden=100, kv_heads=2, head_dim=50, vocab=1000, dtype_bytes=2,
                moe_layers=2, experts=8, top_k=2, expert_params=1e6)
MEMORY_BOUND = Device("toy-gpu", flops=1e18, bandwidth=1e12, memory=80e9, nvlink=1e11)   # FLOPs ~free


class TestPublishedModels:
    # Published totals and active parameters: Qwen's model card (235B total, 22B activated), DeepSeek-V3's
    # README (671B total, 37B activated; its config.json is also DeepSeek-R1's), Mistral's Mixtral
    # announcement (46.7B total, 12.9B per token).
    @pytest.mark.parametrize("name,total,active", [("Qwen3-235B-A22B", 235e9, 22e9),
                                                   ("DeepSeek-V3", 671e9, 37e9),
                                                   ("Mixtral-8x7B", 46.7e9, 12.9e9)])
    def test_total_and_active_parameters_match_the_published_figures(self, name, total, active):
        model = MOE_MODELS[name]
        assert model.total_params == pytest.approx(total, rel=0.03)
        assert model.active_params == pytest.approx(active, rel=0.03)

    def test_the_configs_shapes_dense_layers_kept_apart_and_shared_experts(self, tmp_path):
        qwen, deepseek, mixtral = (MOE_MODELS[n] for n in ("Qwen3-235B-A22B", "DeepSeek-V3", "Mixtral-8x7B"))
        assert (qwen.layers, qwen.moe_layers, qwen.experts, qwen.top_k) == (94, 94, 128, 8)
        assert qwen.expert_params == 3 * 4096 * 1536
        # DeepSeek: 61 layers, the first 3 dense (first_k_dense_replace), 256 routed experts, 8 a token
        assert (deepseek.layers, deepseek.moe_layers, deepseek.experts, deepseek.top_k) == (61, 58, 256, 8)
        assert deepseek.expert_params == 3 * 7168 * 2048
        # its always-active parameters hold 3 dense MLPs of 18432 and one shared expert per MoE layer: taking
        # the shared expert out of the count lowers it by exactly 58 experts
        (tmp_path / "config.json").write_text(json.dumps({**_deepseek_config(), "n_shared_experts": 0}))
        no_shared = model_from_config(tmp_path)
        assert deepseek.params - no_shared.params == 58 * 3 * 7168 * 2048
        assert (mixtral.layers, mixtral.moe_layers, mixtral.experts, mixtral.top_k) == (32, 32, 8, 2)
        assert mixtral.expert_params == 3 * 4096 * 14336   # Mixtral's experts are intermediate_size wide

    def test_mla_stores_one_latent_and_one_rotary_key_per_layer(self):
        deepseek = MOE_MODELS["DeepSeek-V3"]
        # (kv_lora_rank 512 + qk_rope_head_dim 64) x 61 layers x 2 bytes (bf16 KV): 70,272 bytes a token,
        # not 2 x 128 heads x 192 x 61 x 2 = 5,996,544 as heads x head_dim would count it
        assert deepseek.kv_bytes_per_token == (512 + 64) * 61 * 2 == 70_272
        # Qwen3-235B-A22B: a key and a value of 4 KV heads x 128 per layer
        assert MOE_MODELS["Qwen3-235B-A22B"].kv_bytes_per_token == 2 * 4 * 128 * 94 * 2

    def test_attention_is_priced_from_its_own_shapes(self):
        deepseek, qwen, h200 = MOE_MODELS["DeepSeek-V3"], MOE_MODELS["Qwen3-235B-A22B"], GPUS["H200"]
        # MLA prefill: 128 heads x (QK over 128 + 64, AV over 128) = 4 x 20480 FLOPs a query-key pair and layer;
        # decode in the absorbed form: 128 x (QK over 512 + 64, AV over 512) = 4 x 69632
        assert (deepseek.attention_width, deepseek.decode_attention_width) == (20480, 69632)
        # decode attention on an H200 is then compute-bound, at the bf16 peak (the FP8 checkpoint's
        # attention does not run on FP8 tensor cores): 4 x 61 x 69632 FLOPs against 70,272 bytes
        flops_bound = 4 * 61 * 69632 / (h200.flops * 0.7)
        assert flops_bound > deepseek.kv_bytes_per_token / (h200.bandwidth * 0.7)
        assert cm.decode_seconds(deepseek, h200, 1, 1001) - cm.decode_seconds(deepseek, h200, 1, 1) == \
            pytest.approx(1000 * flops_bound)
        # Qwen3's 64 query heads x 128 are 8192 wide, twice its hidden size
        assert qwen.attention_width == 64 * 128 and qwen.hidden == 4096

    def test_fp8_weights_where_the_checkpoint_declares_them(self):
        deepseek, qwen = MOE_MODELS["DeepSeek-V3"], MOE_MODELS["Qwen3-235B-A22B"]
        assert (deepseek.dtype_bytes, deepseek.kv_dtype_bytes) == (1, 2)   # FP8 weights, bf16 KV
        assert deepseek.memory_bytes == pytest.approx(deepseek.total_params)   # one byte a parameter
        assert (qwen.dtype_bytes, qwen.memory_bytes) == (2, pytest.approx(2 * qwen.total_params))
        # an FP8 checkpoint runs at the FP8 peak where the GPU has one: a compute-bound prefill is faster
        h200 = GPUS["H200"]
        with_fp8 = cm.prefill_seconds(deepseek, h200.group(8, 8), [8000])
        without = cm.prefill_seconds(deepseek, replace(h200, fp8_flops=0.0).group(8, 8), [8000])
        assert with_fp8 < 0.8 * without

    def test_an_incomplete_moe_config_and_llama4_are_refused(self, tmp_path):
        (tmp_path / "config.json").write_text(json.dumps({**_deepseek_config(), "num_experts_per_tok": 300}))
        with pytest.raises(ValueError, match="needs num_experts_per_tok between 1 and 256"):
            model_from_config(tmp_path)
        (tmp_path / "config.json").write_text(json.dumps({**_deepseek_config(), "model_type": "llama4_text"}))
        with pytest.raises(ValueError, match="Llama 4"):
            model_from_config(tmp_path)


def _deepseek_config() -> dict:
    from lab.planner.model_config import CONFIGS
    return json.loads((CONFIGS / "DeepSeek-V3.json").read_text())


class TestMoEStep:
    def test_activated_experts_k_at_one_token_all_at_many(self):
        assert cm.activated_experts(256, 8, 1) == pytest.approx(8)
        assert cm.activated_experts(8, 2, 2) == pytest.approx(8 * (1 - 0.75 ** 2))   # 3.5
        assert cm.activated_experts(256, 8, 4096) == pytest.approx(256, rel=1e-6)
        assert cm.activated_experts(128, 8, 64) == pytest.approx(128 * (1 - (120 / 128) ** 64))   # 125.9
        assert cm.activated_experts(256, 8, 0) == 0.0

    def test_a_decode_step_reads_only_the_experts_its_tokens_activate(self):
        # memory bound: 2 MoE layers x activated experts x 1e6 parameters x 2 bytes at 1 TB/s x 0.7
        for batch in (1, 3, 64):
            want = 2 * cm.activated_experts(8, 2, batch) * 1e6 * 2 / 0.7e12
            assert cm.experts_seconds(TOY, MEMORY_BOUND, batch, 0.7) == pytest.approx(want)
        one = cm.experts_seconds(TOY, MEMORY_BOUND, 1, 0.7)
        assert one == pytest.approx(2 * 2 * 1e6 * 2 / 0.7e12)   # top-2 of 8 at one token
        # the whole step: the always-active blocks and the lm_head as a dense model's, plus the experts
        dense = replace(TOY, moe_layers=0, experts=0, top_k=0, expert_params=0.0)
        assert cm.decode_seconds(TOY, MEMORY_BOUND, 1, 10) == pytest.approx(
            cm.decode_seconds(dense, MEMORY_BOUND, 1, 10) + one)

    def test_expert_flops_come_from_the_active_parameters(self):
        compute_bound = Device("toy-gpu", flops=1e12, bandwidth=1e18, memory=80e9)
        tokens = 1000   # 250 tokens to each of the 8 experts: their GEMMs at 0.7 x 250 / (250 + 150) of peak
        want = 2 * 2 * 2 * 1e6 * tokens / (1e12 * 0.7 * 250 / 400)
        assert cm.experts_seconds(TOY, compute_bound, tokens, 0.7) == pytest.approx(want)

    def test_expert_parallelism_adds_the_all_to_all_and_the_imbalance(self):
        ep4 = replace(MEMORY_BOUND, expert_imbalance=1.5).group(4, 4)
        tp4 = replace(MEMORY_BOUND, expert_imbalance=1.5).group(4)
        tokens = 512
        # dispatch and combine: 512 tokens x 100 hidden x 2 bytes x top-2 each way, each GPU sending its 1/4,
        # 3/4 of it to other GPUs, over 100 GB/s; plus 10 us each, in both MoE layers
        per_gpu = 512 * 100 * 2 * 2 / 4 * 3 / 4
        assert cm.alltoall_seconds(TOY, ep4, tokens) == pytest.approx(2 * 2 * (10e-6 + per_gpu / 1e11))
        assert cm.alltoall_seconds(TOY, tp4, tokens) == 0.0
        balanced = cm.experts_seconds(TOY, tp4, tokens, 0.7)   # experts sliced over TP: no imbalance
        assert cm.experts_seconds(TOY, ep4, tokens, 0.7) == pytest.approx(
            1.5 * balanced + cm.alltoall_seconds(TOY, ep4, tokens))
        # the MoE layers' MLP all-reduces give way to the combine: 2 x 4 layers - 2 MoE layers
        activation = tokens * 100 * 2
        assert cm.allreduce_seconds(TOY, ep4, tokens) == pytest.approx(6 * (10e-6 + 1.5 * activation / 1e11))
        assert cm.allreduce_seconds(TOY, tp4, tokens) == pytest.approx(8 * (10e-6 + 1.5 * activation / 1e11))

    def test_expert_parallelism_must_divide_the_instance(self):
        with pytest.raises(ValueError, match="expert parallelism must divide"):
            GPUS["H200"].group(8, 3)
        with pytest.raises(ValueError, match="expert parallelism must divide"):
            Placement("colocated", 1, tp=4, ep=8)
        assert Placement("disaggregated", prefill=1, decode=1, tp=8, ep=8, decode_ep=4).label == "1P1D TP8 EP8/EP4"
        labels = [p.label for p in candidates(Hardware(MOE_MODELS["Qwen3-235B-A22B"], GPUS["H200"]), 8, ep=8)]
        assert labels[:2] == ["colocated x2 TP4 EP4", "chunked x2 TP4 EP4 (chunk 512)"]   # EP capped at TP
        assert "1P1D TP4 EP4" in labels


class TestDenseUnchanged:
    """Numbers computed by the planner before MoE support (commit 0a1f7f6), on the same inputs."""

    def test_a_dense_plan_is_unchanged(self):
        hw = Hardware(MODELS["OPT-13B"], GPUS["A100-80GB"], LINKS["NVLink 4"])
        got = [(r.placement.label, r.goodput) for r in plan(hw, Workload(1.0, 512, 64), SLO(0.4, 0.04), 3)]
        want = [("1P1D TP2/TP1", 18.486453626497937), ("2P1D", 18.473351958442304),
                ("chunked x3 (chunk 512)", 16.96483221067307), ("colocated x3", 13.807910809113764),
                ("1P1D TP1/TP2", 10.742317153936225), ("1P2D", 10.635314350553013)]
        assert [label for label, _ in got] == [label for label, _ in want]
        assert [g for _, g in got] == pytest.approx([g for _, g in want], rel=1e-9)

    def test_dense_fp8_plan_and_step_costs_are_unchanged(self):
        hw = Hardware(MODELS["Llama-3.1-70B"], GPUS["H200"], LINKS["NVLink 4"]).with_fp8(True, False)
        got = [(r.placement.label, r.goodput) for r in plan(hw, Workload(1.0, 2000, 200), SLO(2.0, 0.05), 8)][:4]
        assert [label for label, _ in got][2:] == ["5P3D", "chunked x4 TP2 (chunk 512)"]
        assert [g for _, g in got] == pytest.approx([26.718878416458786, 26.718878416458786, 24.364640428771253,
                                                      23.496012949408154], rel=1e-9)
        model, tp4 = MODELS["Llama-3.1-70B"], GPUS["H200"].group(4)
        assert cm.prefill_seconds(model, tp4, [4000]) == pytest.approx(0.24944415723002553, rel=1e-12)
        assert cm.decode_seconds(model, tp4, 40, 160000) == pytest.approx(0.016192839790476192, rel=1e-12)


class TestMixedGPUs:
    def test_prefill_runs_on_the_prefill_gpu_and_decode_on_the_decode_gpu(self):
        model, a100, h200 = MODELS["Llama-3.1-8B"], GPUS["A100-80GB"], GPUS["H200"]
        hw = Hardware(model, h200, LINKS["NVLink 3"], prefill_device=a100, decode_device=h200)
        prompt, output = 2000, 20
        (r,) = simulate(hw, Placement("disaggregated", prefill=1, decode=1), Workload(0.1, prompt, output, requests=1))
        ttft = cm.prefill_seconds(model, a100, [prompt]) + cm.transfer_seconds(model, prompt, LINKS["NVLink 3"])
        assert r.ttft == pytest.approx(ttft)
        # decode steps of one sequence whose context grows from prompt + 1 tokens, on the H200
        steps = [cm.decode_seconds(model, h200, 1, prompt + 1 + s) for s in range(output - 1)]
        assert r.tpot == pytest.approx(sum(steps) / (output - 1))
        swapped = cm.prefill_seconds(model, h200, [prompt]) + cm.transfer_seconds(model, prompt, LINKS["NVLink 3"])
        assert swapped < 0.5 * ttft   # the H200's 3.2x FLOP/s: a different answer if the phases were mixed up

    def test_cost_per_hour_and_tokens_per_dollar(self):
        hw = Hardware(MODELS["Llama-3.1-8B"], GPUS["H200"], prefill_device=replace(GPUS["H200"], price_per_hour=4.0),
                      decode_device=replace(GPUS["A100-80GB"], price_per_hour=2.0))
        placement = Placement("disaggregated", prefill=2, decode=1, decode_tp=2)
        assert hw.dollars_per_hour(placement) == 2 * 4.0 + 2 * 2.0
        assert hw.dollars_per_hour(Placement("colocated", 2)) == 2 * GPUS["H200"].price_per_hour
        result = PlacementResult(placement, goodput=2.0, output_tokens=500, dollars_per_hour=12.0)
        assert result.tokens_per_dollar == pytest.approx(2.0 * 500 * 3600 / 12.0)   # 300,000 tokens per US$
        assert PlacementResult(placement, 2.0, output_tokens=500).tokens_per_dollar == 0.0   # unpriced

    def test_the_cli_plans_mixed_gpus_and_reports_per_dollar(self, capsys):
        assert plan_cli(["--model", "Llama-3.1-8B", "--gpu", "H200", "--prefill-gpu", "H200", "--decode-gpu",
                         "A100-80GB", "--gpus", "3", "--prompt", "2000", "--output", "100", "--ttft", "1",
                         "--tpot", "0.05", "--prefill-price", "4", "--decode-price", "2", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        best = out["best_per_kind"]["disaggregated"]
        placement = next(p for p in candidates(Hardware(MODELS["Llama-3.1-8B"], GPUS["H200"]), 3)
                         if p.label == best["placement"])
        prefill_gpus = placement.prefill * placement.tp
        assert best["dollars_per_hour"] == 4 * prefill_gpus + 2 * (3 - prefill_gpus)
        assert best["output_tokens_per_dollar"] == pytest.approx(
            best["goodput_rps"] * 100 * 3600 / best["dollars_per_hour"])
        colocated = out["best_per_kind"]["colocated"]
        assert colocated["dollars_per_hour"] == 3 * GPUS["H200"].price_per_hour   # --gpu at its assumed price

    def test_the_cli_plans_an_moe_model_with_expert_parallelism(self, capsys):
        assert plan_cli(["--model", "Mixtral-8x7B", "--gpu", "H200", "--gpus", "2", "--ep", "2", "--prompt", "1000",
                         "--output", "100", "--ttft", "2", "--tpot", "0.05", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        labels = [p.label for p in candidates(Hardware(MOE_MODELS["Mixtral-8x7B"], GPUS["H200"]), 2, ep=2)]
        # a TP1 instance has no experts to split; a TP2 one splits them over both GPUs
        assert labels[:4] == ["colocated x2", "chunked x2 (chunk 512)", "colocated x1 TP2 EP2",
                              "chunked x1 TP2 EP2 (chunk 512)"]
        assert out["recommendation"]["placement"] in labels and out["recommendation"]["goodput_rps"] > 0
        assert plan_cli(["--model", "Mixtral-8x7B", "--expert-imbalance", "0.5"]) == 2
        assert "--expert-imbalance >= 1" in capsys.readouterr().err
