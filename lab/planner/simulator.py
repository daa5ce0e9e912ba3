"""A small discrete-event simulation of serving: Poisson arrivals, continuous batching, and the
three placements. Each instance is simulated on its own (requests are spread round-robin), step by
step, with the cost model's step times; it records every request's TTFT and TPOT.
"""
from __future__ import annotations

import heapq
from collections import deque

from engine.cluster.topology import Mode

from . import cost_model as cm
from .hardware import GiB
from .scenario import Hardware, Placement, Request, Workload


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

    def fits(self, hw: Hardware, r: Request, also: int = 0, joining: int = 0) -> bool:
        """Whether `r` may join: its whole KV fits beside the members' (and `also` more tokens of
        `joining` requests about to join), and the batch stays within the engine's max_num_seqs."""
        return (self.reserved + also + r.prompt + r.output <= hw.kv_capacity
                and self.size + joining < hw.device.max_num_seqs)


def _first_token(r: Request, t: float, running: Running) -> None:
    r.first, r.generated = t, 1
    if r.generated >= r.output:
        r.done = t
    else:
        running.add(r)


class DecodeSteps:
    """One instance's decode steps: each batch size's cost is computed once, then a step's time is
    that plus the KV it reads (a sweep runs millions of steps over a few hundred batch sizes)."""

    def __init__(self, hw: Hardware):
        self.hw = hw
        self.costs: dict[int, tuple[float, float]] = {}

    def run(self, running: Running, t: float) -> float:
        """One step of every running request, starting at `t`; returns when it ends."""
        batch = len(running)
        if batch not in self.costs:
            self.costs[batch] = cm.decode_cost(self.hw.model, self.hw.device, batch, self.hw.efficiency)
        seconds, per_kv_token = self.costs[batch]
        t += seconds + per_kv_token * running.context
        running.advance(t)
        return t


def _colocated(hw: Hardware, reqs: list[Request], chunk: int | None) -> None:
    t, i, waiting, running, decode = 0.0, 0, deque(), Running(), DecodeSteps(hw)
    while i < len(reqs) or waiting or running:
        while i < len(reqs) and reqs[i].arrival <= t:
            waiting.append(reqs[i])
            i += 1
        if not waiting and not running:
            t = reqs[i].arrival
            continue
        if chunk is None and waiting and running.fits(hw, waiting[0]):  # prefill-first: decodes wait
            batch = [waiting.popleft()]
            while (waiting and sum(r.prompt for r in batch) + waiting[0].prompt <= hw.device.max_batched_tokens
                   and running.fits(hw, waiting[0], also=sum(r.prompt + r.output for r in batch),
                                    joining=len(batch))):
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
            t = decode.run(running, t)


def _prefill_only(hw: Hardware, reqs: list[Request], links: int) -> None:
    t, i = 0.0, 0
    while i < len(reqs):
        t = max(t, reqs[i].arrival)
        batch = [reqs[i]]
        i += 1
        while (i < len(reqs) and reqs[i].arrival <= t
               and sum(r.prompt for r in batch) + reqs[i].prompt <= hw.device.max_batched_tokens):
            batch.append(reqs[i])
            i += 1
        t += cm.prefill_seconds(hw.model, hw.device, [r.prompt for r in batch], hw.efficiency)
        for r in batch:  # the first token reaches the user with the KV, on the decode side
            r.ready = t + cm.transfer_seconds(hw.model, r.prompt, hw.link, links)


def _decode_only(hw: Hardware, reqs: list[Request]) -> None:
    reqs.sort(key=lambda r: r.ready)
    t, i, running, decode = 0.0, 0, Running(), DecodeSteps(hw)
    while i < len(reqs) or running:
        while i < len(reqs) and reqs[i].ready <= t and running.fits(hw, reqs[i]):
            _first_token(reqs[i], max(reqs[i].ready, t), running)  # the KV lands when there is room for it
            i += 1
        if not running:
            t = max(t, reqs[i].ready)
            continue
        t = decode.run(running, t)


def _instance(hw: Hardware, tp: int, tokens: int, ep: int = 1) -> Hardware:
    """One instance of `tp` GPUs (`ep` of them splitting the experts), checked to hold the weights and the
    KV of a `tokens`-token request."""
    hw = hw.instance(tp, ep)
    cm.check_fits(hw.model, hw.device)
    if tokens > hw.kv_capacity:
        raise ValueError(f"a request of {tokens} tokens needs {tokens * hw.model.kv_bytes_per_token / GiB:.2f} GiB "
                         f"of KV, more than the {hw.kv_capacity * hw.model.kv_bytes_per_token / GiB:.2f} GiB "
                         f"{'one ' if tp == 1 else ''}{hw.device.name} has beside {hw.model.name}'s weights; "
                         f"shorten the requests or choose more or larger GPUs")
    return hw


def simulate(hw: Hardware, placement: Placement, workload: Workload) -> list[Request]:
    reqs = workload.sample()
    longest = max(r.prompt + r.output for r in reqs)
    if placement.mode == Mode.DISAGGREGATED:
        prefill_hw = _instance(hw.phase("prefill"), placement.tp, max(r.prompt for r in reqs), placement.ep)
        decode_hw = _instance(hw.phase("decode"), placement.decode_group, longest, placement.decode_expert_group)
        links = min(placement.tp, placement.decode_group)   # GPU pairs sending KV side by side
        for k in range(placement.prefill):
            _prefill_only(prefill_hw, reqs[k::placement.prefill], links)
        for k in range(placement.decode):
            _decode_only(decode_hw, reqs[k::placement.decode])
    else:
        colocated_hw = _instance(hw, placement.tp, longest, placement.ep)
        for k in range(placement.instances):
            _colocated(colocated_hw, reqs[k::placement.instances],
                       placement.chunk if placement.mode == Mode.CHUNKED else None)
    return reqs
