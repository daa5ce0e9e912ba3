"""The cluster planner: cost formulas by hand, DistServe's direction, the opposite regime, bad input."""
import json

import pytest

from lab.plan import main as plan_cli
from lab.planner import cost_model as cm
from lab.planner.calibration import FixedCosts, StepSample, fit_fixed_costs, leave_one_out
from lab.planner.hardware import GPUS, LINKS, MODELS, Device, ModelSpec, interpolate
from lab.planner.machine_profile import measured_device, model_spec
from lab.planner.model_config import model_from_config
from lab.planner.search import (PlacementResult, SweepPoint, candidates, crossovers, evaluate, pareto_front, plan,
                                plan_report, prompt_sweep)
from lab.planner.goodput import goodput, rate_bound
from lab.planner.scenario import SLO, Hardware, Placement, Workload
from lab.planner.simulator import simulate

TOY = ModelSpec("toy", params=1e9, layers=10, hidden=1000, kv_heads=2, head_dim=100, vocab=10_000, dtype_bytes=2)
GPU = Device("toy-gpu", flops=100e12, bandwidth=1e12, memory=80e9)
FAST = Device("toy-gpu", flops=400e12, bandwidth=1e12, memory=80e9)   # 400 FLOP a byte, as a real GPU has


class TestCostModel:
    def test_kv_bytes_per_token_counts_kv_heads(self):
        assert TOY.kv_bytes_per_token == 2 * 10 * 2 * 100 * 2 == 8000
        assert MODELS["Llama-3.1-70B"].kv_bytes_per_token == 327_680

    def test_a_step_is_the_sum_of_its_operations_and_prefill_is_compute_bound(self):
        # The blocks: 2 * 1e9 * 1000 FLOPs at 400 TFLOP/s x 0.5 x 1000 / (1000 + 150) = 11.5 ms, against 2 GB of
        # weights at 0.5 TB/s = 4 ms: compute. The lm_head for one token: 20 MB at 0.5 TB/s = 40 us, against
        # 2e7 FLOPs at 200 TFLOP/s / 151 = 15 us: memory. Attention: 2 * 10 * 1000 * 1000 * 1000 FLOPs at
        # 200 TFLOP/s = 0.1 ms.
        want = 2e12 / (200e12 * 1000 / 1150) + 2e7 / 0.5e12 + 2e10 / 200e12
        assert cm.prefill_seconds(TOY, FAST, [1000], efficiency=0.5) == pytest.approx(want)

    def test_decode_is_memory_bound_and_batching_is_nearly_free(self):
        one = cm.decode_seconds(TOY, FAST, batch=1, context_tokens=1000, efficiency=1.0)
        assert one == pytest.approx((2.02e9 + 8000 * 1000) / 1e12)        # 2.028 ms of reads
        sixteen = cm.decode_seconds(TOY, FAST, batch=16, context_tokens=16000, efficiency=1.0)
        assert sixteen / one < 1.1

    def test_a_chunk_does_not_hide_the_decodes_kv_reads(self):
        """32 decodes over 4000-token contexts plus a 480-token chunk: the chunk's matrix multiplies cannot
        hide the decodes' KV reads, a separate attention kernel (one max over the step made it ~free)."""
        model, gpu = MODELS["Llama-3.1-8B"], GPUS["H200"]
        mixed = cm.mixed_seconds(model, gpu, 480, 0, 32, 32 * 4000)
        chunk_alone = cm.prefill_seconds(model, gpu, [480])
        kv_reads = model.kv_bytes_per_token * 32 * 4000 / (gpu.bandwidth * 0.7)
        assert mixed >= chunk_alone + kv_reads > 1.3 * cm.decode_seconds(model, gpu, 32, 32 * 4000)

    # AIConfigurator 0.12's step costs for vLLM on H200 SXM, dense BF16 (its kernels measured on that GPU).
    @pytest.mark.parametrize("step,reference_s", [
        (lambda: cm.prefill_seconds(MODELS["Llama-3.1-8B"], GPUS["H200"], [4000]), 0.091),
        (lambda: cm.decode_seconds(MODELS["Llama-3.1-8B"], GPUS["H200"], 1, 4000), 0.0050),
        (lambda: cm.decode_seconds(MODELS["Llama-3.1-8B"], GPUS["H200"], 80, 80 * 4000), 0.0160),
        (lambda: cm.decode_seconds(MODELS["Llama-3.1-8B"], GPUS["H200"], 256, 256 * 128), 0.0109),
        (lambda: cm.prefill_seconds(MODELS["Llama-3.1-70B"], GPUS["H200"].group(2), [4000]), 0.453),
        (lambda: cm.prefill_seconds(MODELS["Llama-3.1-70B"], GPUS["H200"].group(4), [4000]), 0.259),
        (lambda: cm.decode_seconds(MODELS["Llama-3.1-70B"], GPUS["H200"].group(4), 40, 40 * 4000), 0.0166),
    ], ids=["8B prefill 4000", "8B decode 1", "8B decode 80x4000", "8B decode 256x128", "70B prefill TP2",
            "70B prefill TP4", "70B decode 40 TP4"])
    def test_step_costs_are_within_25_percent_of_aiconfigurator(self, step, reference_s):
        assert step() == pytest.approx(reference_s, rel=0.25)

    def test_fixed_costs_per_layer_add_to_the_roofline(self):
        slow = Device("slow", flops=100e12, bandwidth=1e12, memory=80e9, layer_overhead=1e-3, token_overhead=1e-6,
                      sequence_overhead=1e-5)
        roofline = cm.decode_seconds(TOY, GPU, batch=4, context_tokens=400, efficiency=1.0)
        # 10 layers x (1 ms per step + 4 tokens x 1 us + 4 decoding sequences x 10 us)
        assert cm.decode_seconds(TOY, slow, 4, 400, efficiency=1.0) == \
            pytest.approx(roofline + 10 * (1e-3 + 4e-6 + 4e-5))
        # a prefill has no decoding sequence: 10 layers x (1 ms + 100 tokens x 1 us)
        prefill = cm.prefill_seconds(TOY, GPU, [100], efficiency=1.0)
        assert cm.prefill_seconds(TOY, slow, [100], efficiency=1.0) == pytest.approx(prefill + 10 * (1e-3 + 1e-4))

    def test_a_measured_device_uses_its_own_efficiency_curves(self):
        measured = Device("cpu", flops=1e12, bandwidth=100e9, memory=80e9,
                          gemm_efficiency=((1, 0.01), (16, 0.25), (1024, 0.5)),
                          attention_efficiency=((64, 0.1), (1024, 0.2)))
        # 1024 tokens: blocks 2.048e12 FLOPs at 0.5 -> 4.096 s; lm_head 2e7 FLOPs at 0.01 -> 2 ms;
        # attention 2 * 10 * 1000 * 1024^2 = 2.097152e10 FLOPs at 0.2 -> 104.8576 ms. Memory: 2.02e9 + 8.192e6
        # bytes at 100 GB/s (as measured, no efficiency factor) = 20.3 ms, hidden under compute.
        assert cm.prefill_seconds(TOY, measured, [1024], efficiency=0.9) == pytest.approx(4.096 + 0.002 + 0.1048576)

    def test_efficiency_curves_interpolate_in_log_tokens_and_clamp(self):
        curve = ((1, 0.1), (4, 0.5), (16, 0.7))
        assert interpolate(curve, 2) == pytest.approx(0.3)
        assert interpolate(curve, 8) == pytest.approx(0.6)
        assert interpolate(curve, 1) == 0.1 and interpolate(curve, 100) == 0.7

    def test_a_measured_device_takes_medians_over_rounds_as_shares_of_the_best_flops(self):
        gemm = [((1, 10e9), (2, 40e9)), ((1, 30e9), (2, 20e9)), ((1, 20e9), (2, 60e9))]
        attention = [((64, 8e9),), ((64, 4e9),), ((64, 6e9),)]
        device = measured_device(30e9, 20e9, 64e9, gemm, attention)
        assert device.flops == 40e9       # the model's own 2-row multiply beat the square-matmul peak
        assert device.gemm_efficiency == ((1, 0.5), (2, 1.0))
        assert device.attention_efficiency == ((64, 0.15),)

    def test_the_bundled_model_counted_from_its_weights_matches_the_preset(self, loaded):
        counted, preset = model_spec(loaded.model, "SmolLM2"), MODELS["SmolLM2-135M (fp32)"]
        assert counted.params == pytest.approx(preset.params, rel=1e-3)
        assert (counted.layers, counted.hidden, counted.kv_heads, counted.head_dim, counted.vocab,
                counted.dtype_bytes) == (preset.layers, preset.hidden, preset.kv_heads, preset.head_dim,
                                         preset.vocab, preset.dtype_bytes)

    def test_transfer_time_is_bytes_over_bandwidth(self):
        assert cm.transfer_seconds(TOY, 1000, 1e9) == pytest.approx(0.008)

    def test_a_model_that_does_not_fit_is_refused(self):
        hw = Hardware(MODELS["Llama-3.1-70B"], GPUS["L40S"])
        # 69.5e9 parameters read per step plus its own 1.05e9-parameter embedding table, in bf16
        with pytest.raises(ValueError, match="needs 131 GiB for its weights, more than the 48 GiB of one L40S"):
            candidates(hw, 1)
        with pytest.raises(ValueError, match="more than the 96 GiB of 2x L40S"):
            candidates(hw, 2)
        with pytest.raises(ValueError, match="more than the 48 GiB of one L40S"):
            simulate(hw, Placement("colocated", 1), Workload(1.0, 100, 10))

    def test_tensor_parallel_instances_pool_their_gpus_and_pay_all_reduces(self):
        group = GPU.group(4)
        assert (group.flops, group.bandwidth, group.memory, group.tp) == (400e12, 4e12, 320e9, 4)
        nvlinked = Device("toy-gpu", flops=100e12, bandwidth=1e12, memory=80e9, nvlink=100e9).group(4)
        # 2 all-reduces x 10 layers x (10 us + 2 * 3/4 of (1000 tokens x 1000 hidden x 2 bytes) over 100 GB/s)
        assert cm.allreduce_seconds(TOY, nvlinked, 1000) == pytest.approx(20 * (1e-5 + 3e-5))
        assert cm.allreduce_seconds(TOY, GPU, 1000) == 0.0
        assert cm.transfer_seconds(TOY, 1000, 1e9, tp=4) == pytest.approx(0.002)   # four links in parallel

    def test_the_search_tries_every_tensor_parallel_size_that_holds_the_model(self):
        placements = candidates(Hardware(MODELS["Llama-3.1-70B"], GPUS["H100-SXM"]), 8)
        assert [p.label for p in placements] == [
            "colocated x4 TP2", "chunked x4 TP2 (chunk 512)", "colocated x2 TP4", "chunked x2 TP4 (chunk 512)",
            "colocated x1 TP8", "chunked x1 TP8 (chunk 512)",
            "1P3D TP2", "2P2D TP2", "3P1D TP2", "2P1D TP2/TP4", "1P2D TP4/TP2", "1P1D TP4"]
        assert all(p.total_gpus == 8 for p in placements)

    def test_prefill_and_decode_instances_may_differ_in_size(self):
        placement = Placement("disaggregated", prefill=1, decode=1, tp=2, decode_tp=1)
        assert (placement.total_gpus, placement.label) == (3, "1P1D TP2/TP1")
        hw = Hardware(MODELS["OPT-13B"], GPUS["A100-80GB"])
        wide = simulate(hw, placement, Workload(0.5, 2048, 8, requests=20))
        narrow = simulate(hw, Placement("disaggregated", prefill=1, decode=1), Workload(0.5, 2048, 8, requests=20))
        assert max(r.ttft for r in wide) < max(r.ttft for r in narrow)   # two GPUs prefill a prompt faster


class TestSimulation:
    def test_every_request_finishes_with_its_output_length(self):
        hw = Hardware(TOY, GPU)
        for placement in (Placement("colocated", 2), Placement("chunked", 1, chunk=256),
                          Placement("disaggregated", prefill=1, decode=2)):
            reqs = simulate(hw, placement, Workload(5.0, 300, 20, requests=50))
            assert all(r.done is not None and r.first >= r.arrival and r.done >= r.first for r in reqs)
            assert all(r.generated == r.output for r in reqs)

    def test_disaggregated_ttft_includes_the_kv_transfer(self):
        slow = Hardware(TOY, GPU, link=1e8)          # 100 MB/s: 1000 tokens of KV take 80 ms
        reqs = simulate(slow, Placement("disaggregated", prefill=1, decode=1), Workload(0.1, 1000, 4, requests=5))
        assert min(r.ttft for r in reqs) >= 0.08


class TestKVMemory:
    def test_kv_capacity_is_the_memory_left_beside_the_weights(self):
        hw = Hardware(TOY, Device("3 GB", flops=100e12, bandwidth=1e12, memory=3e9))
        # (0.9 x 3 GB - 2.02 GB read per step - 20 MB of embedding table) / 8000 bytes per token
        assert hw.kv_capacity == 82_500

    def test_a_request_larger_than_the_kv_memory_is_refused(self):
        hw = Hardware(TOY, Device("3 GB", flops=100e12, bandwidth=1e12, memory=3e9))
        with pytest.raises(ValueError, match="a request of 100000 tokens needs 0.75 GiB of KV, more than the 0.61 GiB"):
            simulate(hw, Placement("colocated"), Workload(1.0, 99_000, 1000, requests=3))

    def test_full_kv_memory_makes_requests_wait(self):
        workload = Workload(50.0, 1000, 20_000, requests=8)    # 21 000 tokens each: 3 fit in 82 500
        small = Hardware(TOY, Device("3 GB", flops=100e12, bandwidth=1e12, memory=3e9))
        large = Hardware(TOY, Device("80 GB", flops=100e12, bandwidth=1e12, memory=80e9))
        for placement in (Placement("colocated"), Placement("chunked", chunk=2048),
                          Placement("disaggregated", prefill=1, decode=1)):
            waited = simulate(small, placement, workload)
            free = simulate(large, placement, workload)
            assert all(r.done is not None for r in waited)
            # the last five wait for the first three's long answers to end before their KV has room
            assert sorted(r.ttft for r in waited)[-4] > 10 * max(r.ttft for r in free)


def test_distserve_direction_two_prefill_one_decode_doubles_goodput_per_gpu():
    """OPT-13B on A100s, 512 prompt / 64 output tokens, P90 TTFT 0.4 s and TPOT 0.04 s."""
    hw = Hardware(MODELS["OPT-13B"], GPUS["A100-80GB"], LINKS["NVLink 4"])
    workload, slo = Workload(1.0, 512, 64), SLO(0.4, 0.04)
    colocated = goodput(hw, Placement("colocated", 1), workload, slo)
    disaggregated = goodput(hw, Placement("disaggregated", prefill=2, decode=1), workload, slo) / 3
    assert disaggregated >= 1.5 * colocated


def test_distserve_example_lands_within_30_percent_of_the_paper_at_half_the_a100s_peaks():
    """The paper's figure: 1.6 req/s per GPU colocated, 3.3 per GPU for 2P1D. The planner's default
    efficiency (0.7, fitted to AIConfigurator's H200 kernels) puts both about 2x higher; at 0.5 of the
    datasheet peaks, both land within 30%: the assumption that differs is how fast the kernels ran."""
    hw = Hardware(MODELS["OPT-13B"], GPUS["A100-80GB"], LINKS["NVLink 4"], efficiency=0.5)
    workload, slo = Workload(1.0, 512, 64), SLO(0.4, 0.04)
    assert goodput(hw, Placement("colocated", 1), workload, slo) == pytest.approx(1.6, rel=0.3)
    two_one = goodput(hw, Placement("disaggregated", prefill=2, decode=1), workload, slo)
    assert two_one / 3 == pytest.approx(3.3, rel=0.3)


def test_tight_tpot_crossover_short_prompts_colocated_long_prompts_disaggregated():
    """With TPOT 0.03 s, chunked prefill's mixed steps cost every decode its SLO once prompts are long."""
    hw = Hardware(MODELS["OPT-13B"], GPUS["A100-80GB"], LINKS["NVLink 4"])
    short, long = prompt_sweep(hw, Workload(1.0, 512, 64), SLO(ttft_s=2.0, tpot_s=0.03), 2, [128, 2048])
    assert (short.winner, long.winner) == ("colocated", "xPyD")
    assert [(a.prompt_tokens, b.prompt_tokens) for a, b in crossovers([short, long])] == [(128, 2048)]


def test_opposite_regime_short_prompts_tight_ttft_slow_link_colocated_wins():
    hw = Hardware(MODELS["OPT-13B"], GPUS["A100-80GB"], LINKS["TCP 10 GbE"])
    workload, slo = Workload(1.0, 64, 64), SLO(ttft_s=0.06, tpot_s=0.2)
    results = plan(hw, workload, slo, gpus=2)
    assert results[0].placement.mode in ("colocated", "chunked")
    by_label = {r.placement.label: r for r in results}
    assert by_label["colocated x2"].per_gpu > by_label["1P1D"].per_gpu


def _point(prompt: int, colocated: float, disaggregated: float) -> SweepPoint:
    return SweepPoint(prompt, PlacementResult(Placement("colocated", 2), 2 * colocated),
                      PlacementResult(Placement("disaggregated", prefill=1, decode=1), 2 * disaggregated))


def test_crossovers_are_where_the_winner_changes_ties_skipped():
    points = [_point(64, 10, 5), _point(128, 10, 10.2), _point(256, 4, 6), _point(512, 1, 3)]
    assert [p.winner for p in points] == ["colocated", "tie", "xPyD", "xPyD"]
    assert [(a.prompt_tokens, b.prompt_tokens) for a, b in crossovers(points)] == [(64, 256)]
    assert crossovers(points[2:]) == []


def test_the_prompt_sweep_compares_the_best_of_each_family_at_every_length():
    hw = Hardware(MODELS["OPT-13B"], GPUS["A100-80GB"], LINKS["NVLink 4"])
    points = prompt_sweep(hw, Workload(1.0, 512, 64, requests=100), SLO(0.4, 0.04), 3, [128, 1024])
    assert [p.prompt_tokens for p in points] == [128, 1024]
    for p in points:
        assert p.colocated.placement.mode in ("colocated", "chunked")
        assert p.disaggregated.placement.mode == "disaggregated"
        alone = plan(hw, Workload(1.0, p.prompt_tokens, 64, requests=100), SLO(0.4, 0.04), 3)
        assert p.colocated.per_gpu == max(r.per_gpu for r in alone if r.placement.mode != "disaggregated")
    with pytest.raises(ValueError, match="no prefill/decode split of 1 GPUs"):
        prompt_sweep(hw, Workload(1.0, 512, 64), SLO(0.4, 0.04), 1, [128])


@pytest.mark.parametrize("make,message", [
    (lambda: candidates(Hardware(TOY, GPU), 0), "GPU budget must be at least 1"),
    (lambda: Workload(-1.0, 10, 10), "rate must be > 0"),
    (lambda: Workload(1.0, 0, 10), "must be >= 1"),
    (lambda: Placement("disaggregated", prefill=1, decode=0), "needs >= 1 prefill and >= 1 decode instance"),
    (lambda: Placement("colocated", 0), "needs at least 1 instance"),
    (lambda: Placement("colocated", 1, tp=0), "at least 1 GPU per instance"),
    (lambda: SLO(0, 0.1), "SLO times must be > 0"),
])
def test_bad_input_is_a_clear_error(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_cli_prints_the_best_placement_and_refuses_bad_input(capsys):
    assert plan_cli(["--model", "OPT-13B", "--gpu", "A100-80GB", "--gpus", "3", "--prompt", "512", "--output", "64",
                     "--ttft", "0.4", "--tpot", "0.04"]) == 0
    out = capsys.readouterr().out
    assert "2P1D" in out and "best:" in out
    assert plan_cli(["--gpus", "0"]) == 2
    assert "GPU budget must be at least 1" in capsys.readouterr().err


class TestCalibrationFit:
    def test_known_fixed_costs_are_recovered_exactly(self):
        # 2 layers; per step 1 ms, per token 10 us, per decoding sequence 100 us (per layer)
        def step(tokens, decodes, roofline):
            return StepSample(tokens, decodes, roofline + 2 * (1e-3 + tokens * 1e-5 + decodes * 1e-4), roofline)
        samples = [step(1, 1, 0.01), step(16, 16, 0.02), step(512, 0, 0.3), step(256, 8, 0.2), step(4, 4, 0.01)]
        costs = fit_fixed_costs(samples, layers=2)
        assert (costs.per_step, costs.per_token, costs.per_sequence) == pytest.approx((1e-3, 1e-5, 1e-4))
        for held_out in leave_one_out(samples, layers=2):   # any four of the five determine the three costs
            assert held_out.per_token == pytest.approx(1e-5)

    def test_costs_never_go_negative(self):
        # steps faster than their roofline: no negative overhead is invented to explain them
        samples = [StepSample(1, 1, 0.009, 0.01), StepSample(512, 0, 0.29, 0.3), StepSample(16, 16, 0.019, 0.02)]
        costs = fit_fixed_costs(samples, layers=2)
        assert (costs.per_step, costs.per_token, costs.per_sequence) == (0.0, 0.0, 0.0)

    def test_fitted_costs_go_onto_a_device(self):
        device = FixedCosts(1e-3, 1e-5, 1e-4).on(GPU)
        assert (device.layer_overhead, device.token_overhead, device.sequence_overhead, device.flops) == \
            (1e-3, 1e-5, 1e-4, GPU.flops)


def test_cli_sweep_prints_the_winner_per_length_and_refuses_bad_lengths(capsys):
    assert plan_cli(["--model", "OPT-13B", "--gpu", "A100-80GB", "--gpus", "2", "--ttft", "2", "--tpot", "0.03",
                     "--sweep", "128,2048"]) == 0
    out = capsys.readouterr().out
    assert "colocated" in out and "crossover between 128 and 2048 tokens: colocated -> xPyD" in out
    assert plan_cli(["--sweep", "128,x"]) == 2
    assert "--sweep takes comma-separated prompt lengths such as 128,512,2048, got '128,x'" in capsys.readouterr().err
    assert plan_cli(["--sweep", "128,0"]) == 2
    assert "prompt lengths must be >= 1, got '128,0'" in capsys.readouterr().err


def test_no_placement_is_credited_with_more_than_the_hardware_bound():
    """8B on one H200, 128-token prompts and 512-token answers, loose SLOs: the SLOs hold at any rate the
    hardware can sustain, so the goodput is the bound itself, flagged, not a burst's fantasy."""
    hw = Hardware(MODELS["Llama-3.1-8B"], GPUS["H200"])
    workload, slo = Workload(1.0, 128, 512), SLO(ttft_s=5.0, tpot_s=0.5)
    placement = Placement("colocated", 1)
    result = evaluate(hw, placement, workload, slo)
    assert result.goodput == pytest.approx(rate_bound(hw, placement, workload)) and result.at_bound
    # at most 1024 sequences of 8B decoding together on one H200: tens of thousands of tokens/s, not millions
    assert result.tokens_per_gpu < 50_000


def test_a_placement_that_cannot_hold_one_request_is_dropped_with_the_reason():
    """70B's weights fit one H200 but leave no room for a request's KV: the TP1 placements are dropped and
    said why; the others are planned."""
    hw = Hardware(MODELS["Llama-3.1-70B"], GPUS["H200"])
    report = plan_report(hw, Workload(1.0, 4000, 500, requests=60), SLO(ttft_s=2.0, tpot_s=0.05), gpus=2)
    assert [r.placement.label for r in report.results] == ["colocated x1 TP2", "chunked x1 TP2 (chunk 512)"]
    assert {label for label, _ in report.dropped} == {"colocated x2", "chunked x2 (chunk 512)", "1P1D"}
    # the prefill side holds the prompt (4000 tokens), the others prompt and answer (4500)
    assert all("GiB of KV, more than the 0.00 GiB one H200 has beside Llama-3.1-70B's weights" in why
               for _, why in report.dropped)


def test_cli_json_reports_the_best_of_each_kind_its_percentiles_and_what_was_dropped(capsys):
    assert plan_cli(["--model", "OPT-13B", "--gpu", "A100-80GB", "--gpus", "2", "--prompt", "512", "--output",
                     "64", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["best_per_kind"]) == {"colocated", "chunked", "disaggregated"}
    best = out["recommendation"]
    assert best == max(out["best_per_kind"].values(), key=lambda r: r["goodput_rps_per_gpu"])
    assert best["output_tokens_per_s_per_gpu"] == pytest.approx(best["goodput_rps_per_gpu"] * 64)
    assert 0 < best["ttft_s"]["p50"] <= best["ttft_s"]["p90"] <= 0.4 and best["tpot_s"]["p90"] <= 0.04
    assert out["dropped"] == [] and out["inputs"]["gpus"] == 2


def test_the_pareto_front_trades_speed_per_user_for_throughput_per_gpu(capsys):
    hw = Hardware(MODELS["OPT-13B"], GPUS["A100-80GB"], LINKS["NVLink 4"])
    fronts = pareto_front(hw, Workload(1.0, 512, 64, requests=200), SLO(ttft_s=2.0, tpot_s=0.1), gpus=2)
    assert set(fronts) == {"colocated", "chunked", "disaggregated"}
    for front in fronts.values():
        users, per_gpu = [p.tokens_per_user for p in front], [p.tokens_per_gpu for p in front]
        # from the fastest per user to the most per GPU: each point gives up speed to serve more
        assert users == sorted(users, reverse=True) and per_gpu == sorted(per_gpu) and len(set(per_gpu)) == len(front)
    assert plan_cli(["--model", "OPT-13B", "--gpu", "A100-80GB", "--gpus", "2", "--pareto"]) == 0
    assert "tok/s/user" in capsys.readouterr().out


def test_a_model_from_a_hugging_face_config_counts_as_the_preset(tmp_path, capsys):
    config = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
              "num_hidden_layers": 32, "num_key_value_heads": 8, "vocab_size": 128256, "torch_dtype": "bfloat16",
              "tie_word_embeddings": False}   # Llama-3.1-8B's published config.json, its shapes
    (tmp_path / "config.json").write_text(json.dumps(config))
    spec, preset = model_from_config(tmp_path), MODELS["Llama-3.1-8B"]
    assert spec.params == pytest.approx(preset.params, rel=0.01)
    assert (spec.layers, spec.hidden, spec.kv_heads, spec.head_dim, spec.vocab, spec.kv_bytes_per_token) == \
        (32, 4096, 8, 128, 128256, preset.kv_bytes_per_token)
    assert spec.memory_bytes == pytest.approx(preset.memory_bytes, rel=0.01)
    assert plan_cli(["--model-config", str(tmp_path), "--gpu", "H200", "--gpus", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["recommendation"]["gpus"] == 1
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_local_experts": 8}))
    with pytest.raises(ValueError, match="mixture-of-experts"):
        model_from_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 64}))
    with pytest.raises(ValueError, match="lacks num_hidden_layers, num_attention_heads, vocab_size"):
        model_from_config(tmp_path)
    assert plan_cli(["--model-config", str(tmp_path / "missing")]) == 2
    assert "cannot read a model config" in capsys.readouterr().err


def test_fp8_halves_the_bytes_and_doubles_the_flops_where_the_gpu_has_fp8_tensor_cores(capsys):
    hw = Hardware(MODELS["Llama-3.1-8B"], GPUS["H200"])
    fp8 = hw.with_fp8(weights=True, kv_cache=True)
    assert fp8.model.memory_bytes == hw.model.memory_bytes / 2 and fp8.device.flops == 1979e12
    assert fp8.model.kv_bytes_per_token == hw.model.kv_bytes_per_token / 2
    assert fp8.kv_capacity > 2 * hw.kv_capacity    # half the bytes a token, and more memory left by the weights
    weights_only = hw.with_fp8(weights=True, kv_cache=False)
    assert weights_only.model.kv_bytes_per_token == hw.model.kv_bytes_per_token
    # decode reads half the weight bytes: a batch-1 step takes about half as long
    assert cm.decode_seconds(fp8.model, fp8.device, 1, 4000) < 0.55 * cm.decode_seconds(hw.model, hw.device, 1, 4000)
    with pytest.raises(ValueError, match="A100-80GB has no FP8 tensor cores"):
        Hardware(MODELS["Llama-3.1-8B"], GPUS["A100-80GB"]).with_fp8(weights=False, kv_cache=True)
    assert plan_cli(["--gpu", "A100-80GB", "--fp8-weights"]) == 2
    assert "no FP8 tensor cores" in capsys.readouterr().err


def test_an_nvlink_preset_is_the_link_of_the_gpu_it_belongs_to():
    """The A100 has NVLink 3 (600 GB/s both ways, 300 each), the H100 NVLink 4 (900, 450): a scenario that
    pairs a GPU with an NVLink names that GPU's own."""
    from lab.quiz_planner import SCENARIOS
    assert LINKS["NVLink 3"] == GPUS["A100-80GB"].nvlink == 300e9
    assert LINKS["NVLink 4"] == GPUS["H100-SXM"].nvlink == 450e9
    for s in SCENARIOS:
        if s.link.startswith("NVLink"):
            assert LINKS[s.link] == GPUS[s.gpu].nvlink, s


def test_the_sweep_sentence_says_which_kind_wins_where_and_reads_the_pattern_it_computed():
    """The sentence under the sweep is computed from its winners: never "chunked wins short prompts"
    over a sweep where xPyD wins at 64 tokens."""
    from lab.i18n import t
    from lab.planner.figures import sweep_pattern, sweep_sentence
    why = {pattern: {lang: t(lang, f"plan_sweep_why_{pattern}", changes=2, gap=11, n=256) for lang in ("en", "ru")}
           for pattern in ("colocated_then_xpyd", "xpyd_then_colocated", "xpyd", "colocated", "mixed", "tie", "none")}
    sweeps = {
        "colocated_then_xpyd": ([_point(64, 10, 5), _point(256, 4, 6), _point(1024, 1, 3)],
                                ["colocated / chunked wins at 64", "xPyD wins from 256 to 1024"]),
        "xpyd_then_colocated": ([_point(64, 5, 10), _point(128, 5, 5.1), _point(512, 6, 3)],
                                ["xPyD wins at 64", "a tie (within 5%) at 128", "colocated / chunked wins at 512"]),
        "xpyd": ([_point(64, 5, 10), _point(256, 3, 6), _point(8192, 0, 0)],
                 ["xPyD wins from 64 to 256", "no placement of either kind meets the SLOs at 8192"]),
        # the default sweep's shape: xPyD, a tie, colocated, then xPyD again, and nothing served at the end
        "mixed": ([_point(64, 5, 8), _point(128, 10, 10.2), _point(256, 10, 9), _point(512, 5, 6), _point(1024, 1, 2),
                   _point(8192, 0, 0)],
                  ["xPyD wins at 64 and from 512 to 1024", "colocated / chunked wins at 256"]),
        "none": ([_point(64, 0, 0), _point(128, 0, 0)], ["no placement of either kind meets the SLOs from 64 to 128"]),
    }
    for pattern, (points, says) in sweeps.items():
        assert sweep_pattern(points) == pattern
        for lang in ("en", "ru"):
            sentence = sweep_sentence(points, lang)
            assert sentence.endswith(why[pattern][lang]) or pattern == "mixed", (pattern, lang, sentence)
            others = [why[p][lang] for p in why if p != pattern]
            assert not any(other in sentence for other in others), (pattern, lang, sentence)
        english = sweep_sentence(points, "en")
        assert all(part in english for part in says), english
    # the close call named: 10 against 9 at 256 tokens is the smallest gap of the mixed sweep
    assert sweep_sentence(sweeps["mixed"][0], "en").endswith(why["mixed"]["en"])
    russian = sweep_sentence(sweeps["mixed"][0], "ru")
    assert "(смен: 2)" in russian and "при 256 токенах" in russian


def test_the_planners_results_say_when_the_inputs_changed_under_them():
    """A plan, a Pareto front and a sweep kept from other inputs are marked stale, each until it is
    computed again."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from lab.i18n import t
    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "app.py"), default_timeout=300)
    at.session_state["lang"] = "en"
    at.switch_page("pages/planner.py")
    at.run()
    at.number_input(key="plan_gpus").set_value(2).run()
    for button in ("plan", "pareto", "sweep"):
        at.button(key=button).click().run()
    assert not at.exception and len(at.get("plotly_chart")) >= 5 and not at.warning
    stale = lambda: [w.value for w in at.warning]   # noqa: E731
    marks = {key: t("en", "plan_stale", button=t("en", f"{key}_button"))
             for key in ("plan", "plan_pareto", "plan_sweep")}
    at.number_input(key="plan_prompt").set_value(2048).run()   # the sweep tries its own prompt lengths
    assert stale() == [marks["plan"], marks["plan_pareto"]]
    at.number_input(key="plan_tpot").set_value(0.03).run()
    assert stale() == list(marks.values())
    at.button(key="sweep").click().run()
    assert stale() == [marks["plan"], marks["plan_pareto"]]   # the sweep is of these inputs again
    at.session_state["lang"] = "ru"
    at.run()
    assert at.warning[0].value == t("ru", "plan_stale", button=t("ru", "plan_button"))


def test_a_translated_choice_keeps_its_value_across_languages_and_takes_a_links_preset():
    """The precision and link selectboxes are keyed per language (the browser showed the English label
    on the Russian page under one key): the choice carries over, and a quiz link's preset still sets it."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "app.py"), default_timeout=300)
    at.session_state["lang"] = "en"
    at.switch_page("pages/planner.py")
    at.run()
    at.selectbox(key="plan_precision_en").set_value("fp8_weights").run()
    at.session_state["lang"] = "ru"
    at.run()
    assert at.selectbox(key="plan_precision_ru").value == "fp8_weights"
    assert at.selectbox(key="plan_precision_ru").options[0] == "веса и KV cache в BF16"
    at.selectbox(key="plan_link_ru").set_value("TCP 10 GbE").run()
    at.session_state["lang"] = "en"
    at.run()
    assert (at.selectbox(key="plan_link_en").value, at.selectbox(key="plan_precision_en").value) == (
        "TCP 10 GbE", "fp8_weights")
    at.query_params["link"] = "PCIe Gen5 x16"
    at.run()
    assert at.selectbox(key="plan_link_en").value == "PCIe Gen5 x16"
