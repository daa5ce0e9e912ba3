"""What the planner is asked about: a workload, SLOs, a placement of GPUs, the hardware; and the
requests a simulation fills in."""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

from engine.cluster.topology import Mode

from .hardware import Device, ModelSpec

MEMORY_UTILIZATION = 0.9    # share of GPU memory for weights and KV (vLLM's default)
# Requests simulated: enough for a steady state (a 300-request burst at 200 req/s lasts 1.5 s and never
# builds the queue an overloaded server would), bounded to keep a plan to seconds.
MIN_SECONDS, MIN_REQUESTS, MAX_REQUESTS = 20.0, 300, 10000


@dataclass(frozen=True)
class Workload:
    rate: float                 # requests/s (Poisson)
    prompt_tokens: int
    output_tokens: int
    requests: int | None = None  # None: MIN_SECONDS of arrivals, within [MIN_REQUESTS, MAX_REQUESTS]
    spread: float = 0.0         # lengths uniform in +-spread around the mean (0: fixed)
    seed: int = 0

    def __post_init__(self):
        if not self.rate > 0:
            raise ValueError(f"rate must be > 0 requests/s, got {self.rate}")
        if self.prompt_tokens < 1 or self.output_tokens < 1 or (self.requests is not None and self.requests < 1):
            raise ValueError("prompt_tokens, output_tokens and requests must be >= 1")
        if not 0 <= self.spread < 1:
            raise ValueError(f"spread must be in [0, 1), got {self.spread}")

    def sample(self) -> list[Request]:
        rng, t, out = random.Random(self.seed), 0.0, []
        vary = lambda n: max(1, round(n * rng.uniform(1 - self.spread, 1 + self.spread)))  # noqa: E731
        count = self.requests or min(MAX_REQUESTS, max(MIN_REQUESTS, math.ceil(self.rate * MIN_SECONDS)))
        for _ in range(count):
            t += rng.expovariate(self.rate)
            out.append(Request(t, vary(self.prompt_tokens), vary(self.output_tokens)))
        return out


@dataclass(frozen=True)
class SLO:
    ttft_s: float
    tpot_s: float
    attainment: float = 0.9     # share of requests that must meet both (DistServe's P90)

    def __post_init__(self):
        if self.ttft_s <= 0 or self.tpot_s <= 0 or not 0 < self.attainment <= 1:
            raise ValueError("SLO times must be > 0 s and attainment in (0, 1]")


@dataclass(frozen=True)
class Placement:
    mode: Mode
    instances: int = 1          # colocated / chunked instances
    prefill: int = 0            # disaggregated: prefill instances
    decode: int = 0             # disaggregated: decode instances
    chunk: int = 512            # chunked: tokens per step
    tp: int = 1                 # GPUs per instance (tensor parallelism); disaggregated: per prefill instance
    decode_tp: int = 0          # disaggregated: GPUs per decode instance (0: the same as tp)
    ep: int = 1                 # MoE: of an instance's GPUs, how many split the experts (colocated; prefill)
    decode_ep: int = 0          # disaggregated: the same for a decode instance (0: the same as ep)

    def __post_init__(self):
        if self.mode not in set(Mode):
            raise ValueError(f"placement mode must be one of {[m.value for m in Mode]}, got {self.mode!r}")
        object.__setattr__(self, "mode", Mode(self.mode))
        if self.mode == Mode.DISAGGREGATED and (self.prefill < 1 or self.decode < 1):
            raise ValueError(f"a disaggregated placement needs >= 1 prefill and >= 1 decode instance, got "
                             f"{self.prefill}P{self.decode}D")
        if self.mode != Mode.DISAGGREGATED and self.instances < 1:
            raise ValueError(f"a {self.mode} placement needs at least 1 instance, got {self.instances}")
        if self.tp < 1 or self.decode_tp < 0:
            raise ValueError(f"tensor parallelism needs at least 1 GPU per instance, got {self.tp}")
        if self.ep < 1 or self.decode_ep < 0 or self.tp % self.ep or self.decode_group % self.decode_expert_group:
            raise ValueError(f"expert parallelism must divide an instance's GPUs, got EP{self.ep} of TP{self.tp}"
                             f" and EP{self.decode_expert_group} of TP{self.decode_group}")

    @property
    def decode_group(self) -> int:
        return self.decode_tp or self.tp

    @property
    def decode_expert_group(self) -> int:
        return self.decode_ep or self.ep

    @property
    def _ep_label(self) -> str:
        if self.mode == Mode.DISAGGREGATED and self.decode_expert_group != self.ep:
            return f" EP{self.ep}/EP{self.decode_expert_group}"
        return f" EP{self.ep}" if self.ep > 1 else ""

    @property
    def total_gpus(self) -> int:
        if self.mode == Mode.DISAGGREGATED:
            return self.prefill * self.tp + self.decode * self.decode_group
        return self.instances * self.tp

    @property
    def label(self) -> str:
        if self.mode == Mode.DISAGGREGATED:
            if self.decode_group != self.tp:
                return f"{self.prefill}P{self.decode}D TP{self.tp}/TP{self.decode_group}{self._ep_label}"
            return f"{self.prefill}P{self.decode}D" + (f" TP{self.tp}" if self.tp > 1 else "") + self._ep_label
        tp = f" TP{self.tp}" if self.tp > 1 else ""
        return (f"{self.mode} x{self.instances}{tp}{self._ep_label}"
                + (f" (chunk {self.chunk})" if self.mode == Mode.CHUNKED else ""))


@dataclass
class Request:
    arrival: float
    prompt: int
    output: int
    prefilled: int = 0
    generated: int = 0
    ready: float = 0.0          # disaggregated: when its KV reached the decode instance
    first: float | None = None
    done: float | None = None

    @property
    def ttft(self) -> float:
        return self.first - self.arrival

    @property
    def tpot(self) -> float:
        return (self.done - self.first) / (self.output - 1) if self.output > 1 else 0.0


@dataclass(frozen=True)
class Hardware:
    model: ModelSpec
    device: Device              # one GPU, or a tensor-parallel group of them (Device.group); colocated instances
    link: float = 450e9         # bytes/s between a prefill and a decode GPU, one direction
    efficiency: float = 0.7     # share of the datasheet peaks a GPU preset reaches
    prefill_device: Device | None = None   # disaggregated: the prefill pool's GPU (None: device)
    decode_device: Device | None = None    # disaggregated: the decode pool's GPU (None: device)

    def __post_init__(self):
        if not 0 < self.efficiency <= 1 or self.link <= 0:
            raise ValueError("efficiency must be in (0, 1] and the link bandwidth > 0")

    def phase(self, name: str) -> Hardware:
        """The hardware of one pool of a disaggregated placement: its own GPU type."""
        device = {"prefill": self.prefill_device, "decode": self.decode_device}[name] or self.device
        return replace(self, device=device, prefill_device=None, decode_device=None)

    def dollars_per_hour(self, placement: Placement) -> float:
        """What the placement's GPUs cost an hour at their price per GPU-hour."""
        if placement.mode == Mode.DISAGGREGATED:
            return (placement.prefill * placement.tp * self.phase("prefill").device.price_per_hour
                    + placement.decode * placement.decode_group * self.phase("decode").device.price_per_hour)
        return placement.total_gpus * self.device.price_per_hour

    def with_fp8(self, weights: bool, kv_cache: bool) -> Hardware:
        """FP8 weights (half the bytes, FP8 tensor cores' FLOP/s) and/or an FP8 KV cache (half the bytes
        a token), on GPUs that have FP8 tensor cores."""
        if not (weights or kv_cache):
            return self
        for gpu in (self.device, self.prefill_device, self.decode_device):
            if gpu is not None and not gpu.fp8_flops:
                raise ValueError(f"{gpu.name} has no FP8 tensor cores; FP8 needs Ada, Hopper or Blackwell "
                                 f"GPUs (L40S, H100, H200, B200)")
        model = self.model
        fp8 = (lambda d: d and replace(d, flops=d.fp8_flops)) if weights else (lambda d: d)
        if weights:
            model = replace(model, dtype_bytes=1, kv_dtype_bytes=model.kv_dtype_bytes or model.dtype_bytes)
        if kv_cache:
            model = replace(model, kv_dtype_bytes=1)
        label = " + ".join(part for part, on in (("FP8 weights", weights), ("FP8 KV", kv_cache)) if on)
        return replace(self, model=replace(model, name=f"{model.name} ({label})"), device=fp8(self.device),
                       prefill_device=fp8(self.prefill_device), decode_device=fp8(self.decode_device))

    def instance(self, tp: int, ep: int = 1) -> Hardware:
        return replace(self, device=self.device.group(tp, ep))

    @property
    def kv_capacity(self) -> int:
        """Tokens of KV one instance holds beside the weights."""
        free = self.device.memory * MEMORY_UTILIZATION - self.model.memory_bytes
        return max(0, int(free / self.model.kv_bytes_per_token))
