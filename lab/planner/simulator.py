"""A small discrete-event simulation of serving: Poisson arrivals, continuous batching, and the
three placements. Each instance is simulated on its own (requests are spread round-robin), step by
step, with the cost model's step times; it records every request's TTFT and TPOT.
"""
from __future__ import annotations

import heapq
import math
import random
from collections import deque
from dataclasses import dataclass, replace

from . import cost_model as cm
from .hardware import Device, ModelSpec

MAX_PREFILL_TOKENS = 4096   # prompt tokens prefilled together in one prefill-first step
MEMORY_UTILIZATION = 0.9    # share of GPU memory for weights and KV (vLLM's default)
# Requests simulated: enough for a steady state (a 300-request burst at 200 req/s lasts 1.5 s and never
# builds the queue an overloaded server would), bounded to keep a plan to seconds.
MIN_SECONDS, MIN_REQUESTS, MAX_REQUESTS = 20.0, 300, 3000


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
    kind: str                   # colocated | chunked | disaggregated
    instances: int = 1          # colocated / chunked instances
    prefill: int = 0            # disaggregated: prefill instances
    decode: int = 0             # disaggregated: decode instances
    chunk: int = 512            # chunked: tokens per step
    tp: int = 1                 # GPUs per instance (tensor parallelism); disaggregated: per prefill instance
    decode_tp: int = 0          # disaggregated: GPUs per decode instance (0: the same as tp)

    def __post_init__(self):
        if self.kind not in ("colocated", "chunked", "disaggregated"):
            raise ValueError(f"placement kind must be colocated, chunked or disaggregated, got {self.kind!r}")
        if self.kind == "disaggregated" and (self.prefill < 1 or self.decode < 1):
            raise ValueError(f"a disaggregated placement needs >= 1 prefill and >= 1 decode instance, got "
                             f"{self.prefill}P{self.decode}D")
        if self.kind != "disaggregated" and self.instances < 1:
            raise ValueError(f"a {self.kind} placement needs at least 1 instance, got {self.instances}")
        if self.tp < 1 or self.decode_tp < 0:
            raise ValueError(f"tensor parallelism needs at least 1 GPU per instance, got {self.tp}")

    @property
    def decode_group(self) -> int:
        return self.decode_tp or self.tp

    @property
    def total_gpus(self) -> int:
        if self.kind == "disaggregated":
            return self.prefill * self.tp + self.decode * self.decode_group
        return self.instances * self.tp

    @property
    def label(self) -> str:
        if self.kind == "disaggregated":
            if self.decode_group != self.tp:
                return f"{self.prefill}P{self.decode}D TP{self.tp}/TP{self.decode_group}"
            return f"{self.prefill}P{self.decode}D" + (f" TP{self.tp}" if self.tp > 1 else "")
        tp = f" TP{self.tp}" if self.tp > 1 else ""
        return f"{self.kind} x{self.instances}{tp}" + (f" (chunk {self.chunk})" if self.kind == "chunked" else "")


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
    device: Device              # one GPU, or a tensor-parallel group of them (Device.group)
    link: float = 900e9         # bytes/s between a prefill and a decode GPU
    efficiency: float = 0.6

    def __post_init__(self):
        if not 0 < self.efficiency <= 1 or self.link <= 0:
            raise ValueError("efficiency must be in (0, 1] and the link bandwidth > 0")

    def instance(self, tp: int) -> Hardware:
        return replace(self, device=self.device.group(tp))

    @property
    def kv_capacity(self) -> int:
        """Tokens of KV one instance holds beside the weights."""
        free = self.device.memory * MEMORY_UTILIZATION - self.model.weight_bytes
        return max(0, int(free / self.model.kv_bytes_per_token))


class Running:
    """The requests decoding on one instance. A step gives each of them one token; running sums and a
    heap of finishing steps keep that O(log n) instead of a Python loop over a batch of hundreds."""

    def __init__(self):
        self.step = 0          # decode steps this instance has run
        self.size = 0
        self._base = 0         # context tokens = _base + size * step
        self.reserved = 0      # KV tokens held: prompt + whole answer of every member
        self._finishing: list[tuple[int, int, Request]] = []

    def __len__(self) -> int:
        return self.size

    @property
    def context(self) -> int:
        return self._base + self.size * self.step

    def add(self, r: Request) -> None:
        self.size += 1
        self._base += r.prompt + r.generated - self.step
        self.reserved += r.prompt + r.output
        heapq.heappush(self._finishing, (self.step + r.output - r.generated, id(r), r))

    def advance(self, t: float) -> None:
        """One token for every member at time `t`; the ones that reach their length finish."""
        self.step += 1
        while self._finishing and self._finishing[0][0] <= self.step:
            r = heapq.heappop(self._finishing)[2]
            r.generated, r.done = r.output, t
            self.size -= 1
            self._base -= r.prompt + r.output - self.step
            self.reserved -= r.prompt + r.output

    def fits(self, hw: Hardware, r: Request, also: int = 0) -> bool:
        """Whether `r`'s whole KV fits beside the members' (and `also` more tokens about to join)."""
        return self.reserved + also + r.prompt + r.output <= hw.kv_capacity


def _first_token(r: Request, t: float, running: Running) -> None:
    r.first, r.generated = t, 1
    if r.generated >= r.output:
        r.done = t
    else:
        running.add(r)


def _decode_step(hw: Hardware, running: Running, t: float) -> float:
    t += cm.decode_seconds(hw.model, hw.device, len(running), running.context, hw.efficiency)
    running.advance(t)
    return t


def _colocated(hw: Hardware, reqs: list[Request], chunk: int | None) -> None:
    t, i, waiting, running = 0.0, 0, deque(), Running()
    while i < len(reqs) or waiting or running:
        while i < len(reqs) and reqs[i].arrival <= t:
            waiting.append(reqs[i])
            i += 1
        if not waiting and not running:
            t = reqs[i].arrival
            continue
        if chunk is None and waiting and running.fits(hw, waiting[0]):  # prefill-first: decodes wait
            batch = [waiting.popleft()]
            while (waiting and sum(r.prompt for r in batch) + waiting[0].prompt <= MAX_PREFILL_TOKENS
                   and running.fits(hw, waiting[0], also=sum(r.prompt + r.output for r in batch))):
                batch.append(waiting.popleft())
            t += cm.prefill_seconds(hw.model, hw.device, [r.prompt for r in batch], hw.efficiency)
            for r in batch:
                _first_token(r, t, running)
        elif chunk is not None and waiting and chunk > len(running) and running.fits(hw, waiting[0]):
            head = waiting[0]  # decodes plus a piece of a prompt, in one step
            piece = min(chunk - len(running), head.prompt - head.prefilled)
            t += cm.mixed_seconds(hw.model, hw.device, piece, head.prefilled, len(running), running.context,
                                  hw.efficiency)
            running.advance(t)
            head.prefilled += piece
            if head.prefilled == head.prompt:
                waiting.popleft()
                _first_token(head, t, running)
        else:
            t = _decode_step(hw, running, t)


def _prefill_only(hw: Hardware, reqs: list[Request], links: int) -> None:
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
            r.ready = t + cm.transfer_seconds(hw.model, r.prompt, hw.link, links)


def _decode_only(hw: Hardware, reqs: list[Request]) -> None:
    reqs.sort(key=lambda r: r.ready)
    t, i, running = 0.0, 0, Running()
    while i < len(reqs) or running:
        while i < len(reqs) and reqs[i].ready <= t and running.fits(hw, reqs[i]):
            _first_token(reqs[i], max(reqs[i].ready, t), running)  # the KV lands when there is room for it
            i += 1
        if not running:
            t = max(t, reqs[i].ready)
            continue
        t = _decode_step(hw, running, t)


def _instance(hw: Hardware, tp: int, tokens: int) -> Hardware:
    """One instance of `tp` GPUs, checked to hold the weights and the KV of a `tokens`-token request."""
    hw = hw.instance(tp)
    cm.check_fits(hw.model, hw.device)
    if tokens > hw.kv_capacity:
        raise ValueError(f"a request of {tokens} tokens needs {tokens * hw.model.kv_bytes_per_token / 1e9:.1f} GB "
                         f"of KV, more than the {hw.kv_capacity * hw.model.kv_bytes_per_token / 1e9:.1f} GB "
                         f"{'one ' if tp == 1 else ''}{hw.device.name} has beside {hw.model.name}'s weights; "
                         f"shorten the requests or choose more or larger GPUs")
    return hw


def simulate(hw: Hardware, placement: Placement, workload: Workload) -> list[Request]:
    reqs = workload.sample()
    longest = max(r.prompt + r.output for r in reqs)
    if placement.kind == "disaggregated":
        prefill_hw = _instance(hw, placement.tp, max(r.prompt for r in reqs))
        decode_hw = _instance(hw, placement.decode_group, longest)
        links = min(placement.tp, placement.decode_group)   # GPU pairs sending KV side by side
        for k in range(placement.prefill):
            _prefill_only(prefill_hw, reqs[k::placement.prefill], links)
        for k in range(placement.decode):
            _decode_only(decode_hw, reqs[k::placement.decode])
    else:
        colocated_hw = _instance(hw, placement.tp, longest)
        for k in range(placement.instances):
            _colocated(colocated_hw, reqs[k::placement.instances],
                       placement.chunk if placement.kind == "chunked" else None)
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

