"""The lecture's experiment: short chat streams run, a long prompt arrives, what happens to ITL?

Users each run a loop of chat requests (one at a time, like a person waiting for an answer). At
set times long prompts are injected. Every token is stamped when it reaches the client, so the
same experiment measures any lab.target.Target: the local cluster or a remote server.
"""
from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from engine.core.events import FinishReason
from engine.metrics import SLO, stats, summarize

from .load_generator import ChatLoad, LoadGenerator, RequestKind, Sent
from .target import Target


@dataclass(frozen=True)
class Workload:
    users: int = 6                     # concurrent short chat streams
    short_output_tokens: int = 48
    long_prompt_tokens: int = 4000
    long_output_tokens: int = 8
    inject_at: tuple[float, ...] = (15.0,)  # seconds after the start, at the earliest
    inject_after_tokens: int = 0       # ...and not before every user has received this many tokens
    tail_s: float = 4.0                # keep the short streams running this long after the last long answer
    think_s: float = 0.5               # mean pause of a user between an answer and the next question
    time_limit_s: float = 180.0        # the run ends by itself, whatever happens
    seed: int = 0
    slo_ttft_s: float = 1.0
    slo_tpot_s: float = 0.15

    def __post_init__(self):
        if self.long_prompt_tokens < 1:
            raise ValueError(f"long_prompt_tokens must be >= 1, got {self.long_prompt_tokens}")
        if any(t < 0 for t in self.inject_at):
            raise ValueError(f"inject_at times must be >= 0 s, got {self.inject_at}")
        if self.inject_after_tokens < 0:
            raise ValueError(f"inject_after_tokens must be >= 0, got {self.inject_after_tokens}")

    @property
    def chat_load(self) -> ChatLoad:
        return ChatLoad(users=self.users, output_tokens=self.short_output_tokens, think_s=self.think_s,
                        time_limit_s=self.time_limit_s, seed=self.seed)


@dataclass
class RunResult:
    label: str
    started: float
    requests: list[Sent]
    injections: list[tuple[float, float | None]]   # (sent, first token) per long prompt
    transfers: list[dict] = field(default_factory=list)
    slo: SLO = SLO(ttft=1.0, tpot=0.15)


def run_interference(target: Target, workload: Workload, label: str) -> RunResult:
    generator = LoadGenerator(target, workload.chat_load).start()
    deadline = generator.started + workload.time_limit_s
    longs = []
    for at in sorted(workload.inject_at):
        _sleep_until(generator.started + at, deadline)
        # A busy machine streams slowly: wait until every user streams, so that there is a "before".
        _wait_until_streaming(generator, workload.users, workload.inject_after_tokens,
                              generator.started + workload.time_limit_s / 2)
        sent = generator.inject(workload.long_prompt_tokens, output_tokens=workload.long_output_tokens)
        if sent:
            longs.append(sent.stream)
    for stream in longs:
        stream.wait(max(0.0, deadline - time.perf_counter()))
    _sleep_until(time.perf_counter() + workload.tail_s, deadline)
    generator.stop()
    return collect_result(generator, label, SLO(ttft=workload.slo_ttft_s, tpot=workload.slo_tpot_s))


def collect_result(generator: LoadGenerator, label: str, slo: SLO) -> RunResult:
    requests = generator.snapshot()
    injections = [(s.stream.sent, s.stream.token_times[0] if s.stream.token_times else None)
                  for s in requests if s.kind == RequestKind.LONG]
    transfers = [{"request_id": t.request_id, "transport": t.transport, "bytes": t.nbytes,
                  "tokens": t.tokens, "copies": t.copies, "send_s": t.send_seconds, "receive_s": t.receive_seconds,
                  "total_s": t.total_seconds, "gbps": t.gbps, "during_prefill": t.during_prefill,
                  "writing_s": t.writing_seconds}
                 for t in generator.target.finished_transfers()]
    return RunResult(label, generator.started, requests, injections, transfers, slo)


def _wait_until_streaming(generator: LoadGenerator, users: int, tokens: int, give_up: float) -> None:
    """Until each of `users` has received `tokens` tokens (or `give_up`, so that a run always ends)."""
    while tokens and time.perf_counter() < give_up:
        received = {}
        for sent in generator.snapshot():
            if sent.kind == RequestKind.SHORT:
                received[sent.user] = received.get(sent.user, 0) + len(sent.stream.token_times)
        if len(received) >= users and min(received.values()) >= tokens:
            return
        time.sleep(0.05)


def _sleep_until(when: float, deadline: float) -> None:
    time.sleep(max(0.0, min(when, deadline) - time.perf_counter()))


# ---- analysis -----------------------------------------------------------------------------------

def token_table(result: RunResult) -> pd.DataFrame:
    """One row per received token: request, kind, time since start, gap to the previous token.
    Built column-wise: the dashboard rebuilds it every refresh, and row by row a 30-minute load's
    200,000 tokens took 0.8 s of the lab's CPU each time (75 ms this way)."""
    times = [list(sent.stream.token_times) for sent in result.requests]   # a snapshot: clients keep appending
    counts = np.array([len(ts) for ts in times], dtype=np.int64)
    flat = np.fromiter(itertools.chain.from_iterable(times), dtype=np.float64, count=int(counts.sum()))
    firsts = np.cumsum(counts) - counts                                    # each request's first row
    gaps = np.empty_like(flat)
    gaps[1:] = 1000 * np.diff(flat)
    gaps[firsts[counts > 0]] = np.nan                                      # a first token has no gap
    repeat = lambda values: np.repeat(np.array(values, dtype=object), counts)  # noqa: E731
    return pd.DataFrame({
        "request_id": repeat([sent.stream.request_id for sent in result.requests]),
        "kind": repeat([sent.kind for sent in result.requests]),
        "user": np.repeat(np.array([sent.user for sent in result.requests], dtype=np.int64), counts),
        "index": np.arange(len(flat)) - np.repeat(firsts, counts),
        "t": flat - result.started,
        "gap_ms": gaps,
    }, columns=["request_id", "kind", "user", "index", "t", "gap_ms"])


REQUEST_COLUMNS = ["request_id", "kind", "user", "sent", "output_tokens", "ttft_s", "tpot_s", "e2e_s",
                   "finish_reason", "error"]


def request_table(result: RunResult) -> pd.DataFrame:
    rows = []
    for sent in result.requests:
        s, timing = sent.stream, sent.stream.timing
        rows.append({"request_id": s.request_id, "kind": sent.kind, "user": sent.user,
                     "sent": s.sent - result.started, "output_tokens": len(s.token_times),
                     "ttft_s": timing.ttft, "tpot_s": timing.tpot, "e2e_s": timing.e2e,
                     "finish_reason": s.finish_reason, "error": s.error})
    return pd.DataFrame(rows, columns=REQUEST_COLUMNS)


def summarize_run(result: RunResult) -> dict:
    """ITL before vs during the long prefills, the longest stall, TTFTs, transfer, goodput."""
    shorts = [r.stream for r in result.requests if r.kind == RequestKind.SHORT]
    longs = [r.stream for r in result.requests if r.kind == RequestKind.LONG]
    windows = [(sent, first if first is not None else float("inf")) for sent, first in result.injections]
    first_injection = min((w[0] for w in windows), default=float("inf"))
    before, during = [], []
    for s in shorts:
        for a, b in zip(s.token_times, s.token_times[1:]):
            if b < first_injection:
                before.append(b - a)
            elif any(start <= b and a <= end for start, end in windows):  # the gap overlaps a long prefill
                during.append(b - a)
    all_gaps = [gap for s in shorts for gap in s.timing.itls]
    # Output rate while nothing long ran: from the first token of the run to the first injection.
    early = sorted(t for s in shorts for t in s.token_times if t < first_injection)
    rate_before = (len(early) - 1) / (early[-1] - early[0]) if len(early) > 1 and early[-1] > early[0] else float("nan")
    ms = lambda d: {k: round(1000 * v, 1) for k, v in d.items()}  # noqa: E731
    slo = result.slo
    # Requests cancelled when the run ended have no end to measure: left out, as the streams' own timing does.
    short_timings = [s.timing for s in shorts if s.done and s.finish_reason != FinishReason.ABORT]
    overall = summarize(short_timings, slo=slo)
    return {
        "label": result.label,
        "short_requests": len(short_timings),
        "itl_before_ms": ms(stats(before)),
        "itl_during_ms": ms(stats(during)),
        "longest_stall_ms": round(1000 * max(during + [0.0]), 1),
        "longest_gap_overall_ms": round(1000 * max(all_gaps + [0.0]), 1),
        "short_ttft_ms": ms(stats([t.ttft for t in short_timings if t.ttft is not None])),
        "long_ttft_s": [round(s.timing.ttft, 2) if s.timing.ttft is not None else None for s in longs],
        "long_errors": [s.error for s in longs if s.error],
        "transfer": result.transfers,
        "goodput_rps": round(overall.goodput, 3),
        "slo_attainment": round(overall.slo_attainment, 3),
        "slo": {"ttft_s": slo.ttft, "tpot_s": slo.tpot},
        "output_tok_per_s": round(overall.output_throughput, 1),
        "output_tok_per_s_before": round(rate_before, 1),
    }


def relative_injections(result: RunResult) -> list[tuple[float, float | None]]:
    """Each long prompt's (sent, first token) in seconds since the run started."""
    return [(sent - result.started, None if first is None else first - result.started)
            for sent, first in result.injections]


def save_result(result: RunResult, folder: str | Path, meta: dict | None = None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    token_table(result).to_csv(folder / "tokens.csv", index=False)
    request_table(result).to_csv(folder / "requests.csv", index=False)
    summary = {**summarize_run(result), **(meta or {})}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    return folder
