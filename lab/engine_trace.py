"""What each worker did, step by step, during a run: the bars of the engine timeline, and where a
long prompt's time to first token went (queue, prefill, KV transfer, first token out).

Built from the engine's own records: every step (start, duration, kind, which prompts it computed)
and every KV transfer (sent on the prefill worker, loaded on the decode worker). Times are
time.perf_counter() values, one clock for every process of this machine.
"""
from __future__ import annotations

from collections.abc import Iterable

# What a bar of the timeline did.
PREFILL, CHUNK, DECODE, KV_SEND, KV_IMPORT = "prefill", "chunk", "decode", "kv_send", "kv_import"
BAR_KINDS = (PREFILL, CHUNK, DECODE, KV_SEND, KV_IMPORT)
IMPORT_LANE = "{worker} · KV"   # imports overlap the decode steps they are interleaved with: a lane of their own

_STEP_KINDS = {"prefill": PREFILL, "mixed": CHUNK, "decode": DECODE}


def timeline_bars(steps: Iterable, transfers: Iterable, started: float, ended: float,
                  long_ids: set[str]) -> list[dict]:
    """One bar per engine step and per KV send / import that overlaps `started`..`ended`, in seconds since
    `started`; `long` marks the bars that worked on one of the long prompts."""
    bars = []
    for s in steps:
        if s.start <= ended and s.start + s.duration >= started:
            bars.append({"lane": s.worker, "kind": _STEP_KINDS[str(s.kind)], "start": s.start - started,
                         "seconds": s.duration, "tokens": s.num_tokens, "batch": s.batch_size,
                         "long": bool(long_ids & set(s.prompt_requests))})
    for t in transfers:
        if t.send_started > ended or (t.finished_at or ended) < started:
            continue
        long = t.request_id in long_ids
        bars.append({"lane": t.source, "kind": KV_SEND, "start": t.send_started - started,
                     "seconds": t.send_seconds, "tokens": t.tokens, "batch": 1, "long": long})
        if t.finished_at:
            bars.append({"lane": IMPORT_LANE.format(worker=t.target), "kind": KV_IMPORT,
                         "start": t.finished_at - t.receive_seconds - started, "seconds": t.receive_seconds,
                         "tokens": t.tokens, "batch": 1, "long": long})
    return sorted(bars, key=lambda b: b["start"])


def ttft_split(request_id: str, sent: float, first_token: float | None, steps: Iterable,
               transfer=None) -> dict | None:
    """A request's TTFT in four consecutive parts (seconds, they add up to the TTFT): waiting for its
    first prefill step, prefill (from its first to its last prompt step, chunks included), KV transfer
    (from the end of prefill to the KV loaded on the decode worker; 0 without one), and the first token
    reaching the client. None if the request never got its first token."""
    if first_token is None:
        return None
    mine = sorted((s for s in steps if request_id in s.prompt_requests), key=lambda s: s.start)
    if not mine:
        return None
    prefill_start, prefill_end = mine[0].start, mine[-1].start + mine[-1].duration
    kv_usable = transfer.finished_at if transfer is not None and transfer.finished_at else prefill_end
    return {"queue_s": prefill_start - sent, "prefill_s": prefill_end - prefill_start,
            "transfer_s": kv_usable - prefill_end, "first_token_s": first_token - kv_usable,
            "prefill_steps": len(mine), "ttft_s": first_token - sent}
