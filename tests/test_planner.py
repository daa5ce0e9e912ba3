"""The cluster planner: cost formulas by hand, DistServe's direction, the opposite regime, bad input."""
import pytest

from lab.plan import main as plan_cli
from lab.planner import cost_model as cm
from lab.planner.hardware import GPUS, LINKS, MODELS, Device, ModelSpec
from lab.planner.search import candidates, plan
from lab.planner.simulator import SLO, Hardware, Placement, Workload, goodput, simulate

TOY = ModelSpec("toy", params=1e9, layers=10, hidden=1000, kv_heads=2, head_dim=100, dtype_bytes=2)
GPU = Device("toy-gpu", flops=100e12, bandwidth=1e12, memory=80e9)


class TestCostModel:
    def test_kv_bytes_per_token_counts_kv_heads(self):
        assert TOY.kv_bytes_per_token == 2 * 10 * 2 * 100 * 2 == 8000
        assert MODELS["Llama-3.1-70B"].kv_bytes_per_token == 327_680

    def test_prefill_is_compute_bound(self):
        # 2 * 1e9 * 1000 weight FLOPs + 2 * 10 * 1000 * 1000 * 1000 attention FLOPs = 2.02e12 FLOPs
        # at 100 TFLOP/s x 0.5 = 40.4 ms; memory: 2 GB weights + 8 MB KV at 0.5 TB/s = 4.016 ms.
        assert cm.prefill_seconds(TOY, GPU, [1000], efficiency=0.5) == pytest.approx(0.0404)

    def test_decode_is_memory_bound_and_batching_is_nearly_free(self):
        one = cm.decode_seconds(TOY, GPU, batch=1, context_tokens=1000, efficiency=1.0)
        assert one == pytest.approx((2e9 + 8000 * 1000) / 1e12)        # 2.008 ms of reads
        sixteen = cm.decode_seconds(TOY, GPU, batch=16, context_tokens=16000, efficiency=1.0)
        assert sixteen / one < 1.1

    def test_transfer_time_is_bytes_over_bandwidth(self):
        assert cm.transfer_seconds(TOY, 1000, 1e9) == pytest.approx(0.008)

    def test_a_model_that_does_not_fit_is_refused(self):
        with pytest.raises(ValueError, match="needs 140 GB for its weights, more than the 48 GB of one L40S"):
            Hardware(MODELS["Llama-3.1-70B"], GPUS["L40S"])


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


def test_distserve_direction_two_prefill_one_decode_doubles_goodput_per_gpu():
    """OPT-13B on A100s, 512 prompt / 64 output tokens, P90 TTFT 0.4 s and TPOT 0.04 s."""
    hw = Hardware(MODELS["OPT-13B"], GPUS["A100-80GB"], LINKS["NVLink 4"])
    workload, slo = Workload(1.0, 512, 64), SLO(0.4, 0.04)
    colocated = goodput(hw, Placement("colocated", 1), workload, slo)
    disaggregated = goodput(hw, Placement("disaggregated", prefill=2, decode=1), workload, slo) / 3
    assert disaggregated >= 1.5 * colocated


def test_opposite_regime_short_prompts_tight_ttft_slow_link_colocated_wins():
    hw = Hardware(MODELS["OPT-13B"], GPUS["A100-80GB"], LINKS["TCP 10 GbE"])
    workload, slo = Workload(1.0, 64, 64), SLO(ttft_s=0.06, tpot_s=0.2)
    results = plan(hw, workload, slo, gpus=2)
    assert results[0].placement.kind in ("colocated", "chunked")
    by_label = {r.placement.label: r for r in results}
    assert by_label["colocated x2"].per_gpu > by_label["1P1D"].per_gpu


@pytest.mark.parametrize("make,message", [
    (lambda: candidates(0), "GPU budget must be at least 1"),
    (lambda: Workload(-1.0, 10, 10), "rate must be > 0"),
    (lambda: Workload(1.0, 0, 10), "must be >= 1"),
    (lambda: Placement("disaggregated", prefill=1, decode=0), "needs >= 1 prefill and >= 1 decode GPU"),
    (lambda: Placement("colocated", 0), "needs at least 1 GPU"),
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
