"""SLO attainment of a simulated run, and goodput: the highest rate that still meets the SLOs
(DistServe's definition)."""
from __future__ import annotations

from dataclasses import replace

from engine.cluster.topology import Mode

from . import cost_model as cm
from .scenario import SLO, Hardware, Placement, Request, Workload
from .simulator import simulate


def attainment(reqs: list[Request], slo: SLO) -> float:
    return sum(r.ttft <= slo.ttft_s and r.tpot <= slo.tpot_s for r in reqs) / len(reqs)


def rate_bound(hw: Hardware, placement: Placement, workload: Workload) -> float:
    """The request rate the hardware cannot exceed, by the same cost model: every instance busy all the
    time with its largest batches (prompts up to max_batched_tokens a step, decodes up to max_num_seqs
    or as many as its KV memory holds), prefill and decode each paying only for itself."""
    prompt, output = workload.prompt_tokens, workload.output_tokens

    def prefill_per_request(inst: Hardware) -> float:
        batch = max(1, inst.device.max_batched_tokens // prompt)
        return cm.prefill_seconds(inst.model, inst.device, [prompt] * batch, hw.efficiency) / batch

    def decode_per_request(inst: Hardware) -> float:
        batch = max(1, min(inst.device.max_num_seqs, inst.kv_capacity // (prompt + output)))
        context = batch * (prompt + output // 2)
        return (output - 1) * cm.decode_seconds(inst.model, inst.device, batch, context, hw.efficiency) / batch

    if placement.mode == Mode.DISAGGREGATED:
        return min(placement.prefill / prefill_per_request(hw.phase("prefill").instance(placement.tp, placement.ep)),
                   placement.decode / decode_per_request(
                       hw.phase("decode").instance(placement.decode_group, placement.decode_expert_group)))
    inst = hw.instance(placement.tp, placement.ep)
    return placement.instances / (prefill_per_request(inst) + decode_per_request(inst))


def goodput(hw: Hardware, placement: Placement, workload: Workload, slo: SLO, iterations: int = 12) -> float:
    """The highest request rate whose SLO attainment meets the target (DistServe's goodput), req/s; never
    above the hardware's bound (rate_bound), which it returns if the SLOs hold even there."""
    def ok(rate: float) -> bool:
        return attainment(simulate(hw, placement, replace(workload, rate=rate)), slo) >= slo.attainment
    bound = rate_bound(hw, placement, workload)
    if ok(bound):
        return bound
    low, high = 0.0, bound
    for _ in range(iterations):
        middle = (low + high) / 2
        low, high = (middle, high) if ok(middle) else (low, middle)
    return low
