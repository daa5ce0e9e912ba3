"""A small discrete-event simulation of serving: Poisson arrivals, continuous batching, and the
three placements. Each instance is simulated on its own (requests are spread round-robin), step by
step, with the cost model's step times; it records every request's TTFT and TPOT.
"""
from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, replace

from . import cost_model as cm
from .hardware import Device, ModelSpec

MAX_PREFILL_TOKENS = 4096   # prompt tokens prefilled together in one prefill-first step
MEMORY_UTILIZATION = 0.9    # share of GPU memory for weights and KV (vLLM's default)


@dataclass(frozen=True)
class Workload:
    rate: float                 # requests/s (Poisson)
    prompt_tokens: int
    output_tokens: int
    requests: int = 300
    spread: float = 0.0         # lengths uniform in +-spread around the mean (0: fixed)
    seed: int = 0

    def __post_init__(self):
        if not self.rate > 0:
            raise ValueError(f"rate must be > 0 requests/s, got {self.rate}")
        if self.prompt_tokens < 1 or self.output_tokens < 1 or self.requests < 1:
            raise ValueError("prompt_tokens, output_tokens and requests must be >= 1")
        if not 0 <= self.spread < 1:
            raise ValueError(f"spread must be in [0, 1), got {self.spread}")

    def sample(self) -> list[Request]:
        rng, t, out = random.Random(self.seed), 0.0, []
        vary = lambda n: max(1, round(n * rng.uniform(1 - self.spread, 1 + self.spread)))  # noqa: E731
        for _ in range(self.requests):
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
    kind: str                   # colocated | chunked | disaggregated
    gpus: int = 1               # colocated / chunked instances
    prefill: int = 0            # disaggregated: prefill instances
    decode: int = 0             # disaggregated: decode instances
    chunk: int = 512            # chunked: tokens per step

    def __post_init__(self):
        if self.kind not in ("colocated", "chunked", "disaggregated"):
            raise ValueError(f"placement kind must be colocated, chunked or disaggregated, got {self.kind!r}")
        if self.kind == "disaggregated" and (self.prefill < 1 or self.decode < 1):
            raise ValueError(f"a disaggregated placement needs >= 1 prefill and >= 1 decode GPU, got "
                             f"{self.prefill}P{self.decode}D")
        if self.kind != "disaggregated" and self.gpus < 1:
            raise ValueError(f"a {self.kind} placement needs at least 1 GPU, got {self.gpus}")

    @property
    def total_gpus(self) -> int:
        return self.prefill + self.decode if self.kind == "disaggregated" else self.gpus

    @property
    def label(self) -> str:
        if self.kind == "disaggregated":
            return f"{self.prefill}P{self.decode}D"
        return f"{self.kind} x{self.gpus}" + (f" (chunk {self.chunk})" if self.kind == "chunked" else "")


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
    device: Device
    link: float = 900e9         # bytes/s between prefill and decode GPUs
    efficiency: float = 0.6

    def __post_init__(self):
        cm.check_fits(self.model, self.device)
        if not 0 < self.efficiency <= 1 or self.link <= 0:
            raise ValueError("efficiency must be in (0, 1] and the link bandwidth > 0")

    @property
    def kv_capacity(self) -> int:
        """Tokens of KV one GPU holds beside the weights."""
        free = self.device.memory * MEMORY_UTILIZATION - self.model.weight_bytes
        return max(0, int(free / self.model.kv_bytes_per_token))


def _fits(hw: Hardware, holding: list[Request], r: Request) -> bool:
    """Whether `r`'s whole KV (prompt and answer) fits beside the requests already holding KV."""
    return sum(x.prompt + x.output for x in holding) + r.prompt + r.output <= hw.kv_capacity


def _first_token(r: Request, t: float) -> None:
    r.first, r.generated = t, 1
    if r.generated >= r.output:
        r.done = t


def _decode_step(hw: Hardware, running: list[Request], t: float) -> float:
    context = sum(r.prompt + r.generated for r in running)
    t += cm.decode_seconds(hw.model, hw.device, len(running), context, hw.efficiency)
    for r in running:
        r.generated += 1
        if r.generated >= r.output:
            r.done = t
    running[:] = [r for r in running if r.done is None]
    return t


def _colocated(hw: Hardware, reqs: list[Request], chunk: int | None) -> None:
    t, i, waiting, running = 0.0, 0, deque(), []
    while i < len(reqs) or waiting or running:
        while i < len(reqs) and reqs[i].arrival <= t:
            waiting.append(reqs[i])
            i += 1
        if not waiting and not running:
            t = reqs[i].arrival
            continue
        if chunk is None and waiting and _fits(hw, running, waiting[0]):  # prefill-first: decodes wait
            batch = [waiting.popleft()]
            while (waiting and sum(r.prompt for r in batch) + waiting[0].prompt <= MAX_PREFILL_TOKENS
                   and _fits(hw, running + batch, waiting[0])):
                batch.append(waiting.popleft())
            t += cm.prefill_seconds(hw.model, hw.device, [r.prompt for r in batch], hw.efficiency)
            for r in batch:
                _first_token(r, t)
                if r.done is None:
                    running.append(r)
        elif (chunk is not None and waiting and chunk > len(running)
              and _fits(hw, running, waiting[0])):  # decodes plus a piece of a prompt
            head = waiting[0]
            piece = min(chunk - len(running), head.prompt - head.prefilled)
            context = sum(r.prompt + r.generated for r in running)
            t += cm.mixed_seconds(hw.model, hw.device, piece, head.prefilled, len(running), context, hw.efficiency)
            decoding = list(running)
            for r in decoding:
                r.generated += 1
                if r.generated >= r.output:
                    r.done = t
            running[:] = [r for r in running if r.done is None]
            head.prefilled += piece
            if head.prefilled == head.prompt:
                waiting.popleft()
                _first_token(head, t)
                if head.done is None:
                    running.append(head)
        else:
            t = _decode_step(hw, running, t)


def _prefill_only(hw: Hardware, reqs: list[Request]) -> None:
    t, i = 0.0, 0
    while i < len(reqs):
        t = max(t, reqs[i].arrival)
        batch = [reqs[i]]
        i += 1
        while (i < len(reqs) and reqs[i].arrival <= t
               and sum(r.prompt for r in batch) + reqs[i].prompt <= MAX_PREFILL_TOKENS):
            batch.append(reqs[i])
            i += 1
        t += cm.prefill_seconds(hw.model, hw.device, [r.prompt for r in batch], hw.efficiency)
        for r in batch:  # the first token reaches the user with the KV, on the decode side
            r.ready = t + cm.transfer_seconds(hw.model, r.prompt, hw.link)


def _decode_only(hw: Hardware, reqs: list[Request]) -> None:
    reqs.sort(key=lambda r: r.ready)
    t, i, running = 0.0, 0, []
    while i < len(reqs) or running:
        while i < len(reqs) and reqs[i].ready <= t and _fits(hw, running, reqs[i]):
            _first_token(reqs[i], max(reqs[i].ready, t))  # the KV lands when there is room for it
            if reqs[i].done is None:
                running.append(reqs[i])
            i += 1
        if not running:
            t = max(t, reqs[i].ready)
            continue
        t = _decode_step(hw, running, t)


def simulate(hw: Hardware, placement: Placement, workload: Workload) -> list[Request]:
    reqs = workload.sample()
    longest = max(r.prompt + r.output for r in reqs)
    if longest > hw.kv_capacity:
        raise ValueError(f"a request of {longest} tokens needs {longest * hw.model.kv_bytes_per_token / 1e9:.1f} GB "
                         f"of KV, more than the {hw.kv_capacity * hw.model.kv_bytes_per_token / 1e9:.1f} GB one "
                         f"{hw.device.name} has beside {hw.model.name}'s weights; shorten the requests or choose a "
                         f"larger GPU")
    if placement.kind == "disaggregated":
        for k in range(placement.prefill):
            _prefill_only(hw, reqs[k::placement.prefill])
        for k in range(placement.decode):
            _decode_only(hw, reqs[k::placement.decode])
    else:
        for k in range(placement.gpus):
            _colocated(hw, reqs[k::placement.gpus], placement.chunk if placement.kind == "chunked" else None)
    return reqs


def attainment(reqs: list[Request], slo: SLO) -> float:
    return sum(r.ttft <= slo.ttft_s and r.tpot <= slo.tpot_s for r in reqs) / len(reqs)


def goodput(hw: Hardware, placement: Placement, workload: Workload, slo: SLO, iterations: int = 12) -> float:
    """The highest request rate whose SLO attainment meets the target (DistServe's goodput), req/s."""
    def ok(rate: float) -> bool:
        return attainment(simulate(hw, placement, replace(workload, rate=rate)), slo) >= slo.attainment
    low, high = 0.0, 0.25
    while ok(high):
        low, high = high, high * 2
        if high > 1e5:
            return high
    for _ in range(iterations):
        middle = (low + high) / 2
        low, high = (middle, high) if ok(middle) else (low, middle)
    return low

