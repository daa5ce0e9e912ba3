"""What the guided pages tell the learner, computed from what the learner measured.

Each function reads experiment results (the plain dicts of lab.lesson_experiments) and returns
`Said` items: a text key of lab/texts and the measured values it quotes. The branch is chosen by
the numbers, so a sentence never contradicts the figure it sits under: a flat decode curve and a
steep one get different explanations, a prediction that missed says by how much and why.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from enum import StrEnum

from engine.cluster.topology import Mode

from .i18n import Fixed

CLEAR_STALL = 5.0        # a stall this many times the usual ITL is unmistakable
PREDICTION_TOLERANCE = 0.3
SAME = 0.15              # closer than this, two measurements are the same for a lesson
CHUNK_TOKENS = 256       # engine.core.config.EngineConfig.chunk_size, the lessons' chunked budget


class Tone(StrEnum):
    FINDING = "finding"   # the lesson's conclusion
    NOTE = "note"         # context: a prediction, how to read a figure
    WARNING = "warning"   # the run cannot support a conclusion as it stands


@dataclass(frozen=True)
class Said:
    key: str
    values: dict = field(default_factory=dict)
    tone: Tone = Tone.FINDING


def _r(x: float, digits: int = 1) -> Fixed:
    return Fixed(x, digits)


# ---- page 1: two stages ----------------------------------------------------------------------------

def stages_takeaway(stages: dict) -> list[Said]:
    decode, prefill = stages["decode"], stages["prefill"]
    one, many = decode[0], decode[-1]
    if any(math.isnan(d["step_ms"]) for d in (one, many)):
        return [Said("l1_take_missing", tone=Tone.WARNING)]
    ratio = many["step_ms"] / one["step_ms"]
    values = {"batch": many["batch"], "ms1": _r(one["step_ms"], 0), "msn": _r(many["step_ms"], 0),
              "ratio": _r(ratio), "cheaper": _r(many["batch"] / ratio)}
    if ratio < 1.5:
        said = [Said("l1_take_flat", values)]
    elif ratio < many["batch"] / 2:
        said = [Said("l1_take_fixed_cost", values)]
    else:
        said = [Said("l1_take_linear", values, Tone.WARNING)]
    longest = prefill[-1]
    decode_tok_s = 1000 / one["step_ms"]
    said.append(Said("l1_take_prefill", {"tokens": longest["tokens"], "tok_s": _r(longest["tok_s"], 0),
                                         "decode_tok_s": _r(decode_tok_s), "x": _r(longest["tok_s"] / decode_tok_s, 0),
                                         "prefill_share": _r(100 * longest["gflops"] / stages["peak_gflops"], 0),
                                         "decode_share": _r(100 * one["gflops"] / stages["peak_gflops"], 1)}))
    return said


def prefill_rate(stages: dict, tokens: int) -> tuple[float, int]:
    """Page 1's prefill speed (tokens/s) at the measured length closest to `tokens`, and that length."""
    row = min(stages["prefill"], key=lambda r: abs(r["tokens"] - tokens))
    return row["tok_s"], row["tokens"]


# ---- page 4: the problem ---------------------------------------------------------------------------

def stall_prediction(stages: dict | None, long_tokens: int, users: int) -> tuple[Said, float | None]:
    """What page 4 should show, from page 1's prefill speed: the stall is the long prompt's prefill."""
    if not stages:
        return Said("l4_predict_unknown", {"tokens": long_tokens}, Tone.NOTE), None
    rate, at = prefill_rate(stages, long_tokens)
    seconds = long_tokens / rate
    return Said("l4_predict", {"rate": _r(rate, 0), "at": at, "tokens": long_tokens, "seconds": _r(seconds),
                               "users": users}, Tone.NOTE), seconds


def problem_takeaway(run: dict, predicted_s: float | None) -> list[Said]:
    s = run["summary"]
    before = s["itl_before_ms"]["p50"]
    if math.isnan(before):
        return [Said("l4_no_before", tone=Tone.WARNING)]
    stall_s = s["longest_stall_ms"] / 1000
    split = run["ttft_split"][0] if run["ttft_split"] else None
    values = {"tokens": run["long_tokens"], "users": run["users"], "stall": _r(stall_s, 2), "before": _r(before, 0),
              "x": _r(1000 * stall_s / before, 0), "prefill": _r(split["prefill_s"], 2) if split else "?"}
    said = [Said("l4_take_stall" if 1000 * stall_s >= CLEAR_STALL * before else "l4_take_no_stall", values,
                 Tone.FINDING if 1000 * stall_s >= CLEAR_STALL * before else Tone.WARNING)]
    if predicted_s is not None and split:
        measured = split["prefill_s"]
        off = measured / predicted_s - 1
        key = "l4_take_predicted" if abs(off) <= PREDICTION_TOLERANCE else (
            "l4_take_slower_than_predicted" if off > 0 else "l4_take_faster_than_predicted")
        said.append(Said(key, {"predicted": _r(predicted_s), "measured": _r(measured),
                               "pct": _r(100 * abs(off), 0)}, Tone.NOTE))
    return said


# ---- page 5: the fix -------------------------------------------------------------------------------

def cores_available() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def fix_prediction(mode: Mode, colocated: dict | None, stages: dict | None, long_tokens: int) -> tuple[Said, dict]:
    """What the chosen fix should do to page 4's run, before it runs: the text, and the predicted
    longest stall and long-prompt TTFT (seconds) where page 4's run gives the numbers."""
    split = colocated["ttft_split"][0] if colocated and colocated["ttft_split"] else None
    if split is None and not stages:
        return Said(f"l5_predict_{mode}_unknown", tone=Tone.NOTE), {}
    prefill_s = split["prefill_s"] if split else long_tokens / prefill_rate(stages, long_tokens)[0]
    itl_s = colocated["summary"]["itl_before_ms"]["p50"] / 1000 if colocated else float("nan")
    if mode == Mode.DISAGGREGATED:
        cores = cores_available()
        prefill_cores = max(1, cores // 2)
        slower = prefill_s * cores / prefill_cores
        # The decode worker keeps stepping: its longest gap is about one step on its share of the cores.
        predicted = {"stall_s": itl_s * cores / max(1, cores - prefill_cores), "ttft_s": slower}
        return Said("l5_predict_disaggregated", {
            "prefill": _r(prefill_s), "cores": cores, "prefill_cores": prefill_cores,
            "slower_prefill": _r(slower), "decode_cores": cores - prefill_cores}, Tone.NOTE), predicted
    chunk_s = CHUNK_TOKENS / (long_tokens / prefill_s)
    predicted = {"stall_s": chunk_s + (0 if math.isnan(itl_s) else itl_s), "ttft_s": prefill_s}
    return Said("l5_predict_chunked", {"prefill": _r(prefill_s), "chunk": CHUNK_TOKENS,
                                       "chunks": math.ceil(long_tokens / CHUNK_TOKENS), "chunk_s": _r(chunk_s, 2)},
                Tone.NOTE), {k: v for k, v in predicted.items() if not math.isnan(v)}


def fix_takeaway(mode: Mode, fixed: dict, colocated: dict) -> list[Said]:
    """Page 5's conclusions. Each sentence is chosen by the numbers it quotes and by the mode that ran
    (a chunked run has no KV transfer to speak of), and a piece of time too small to print in its
    sentence's units is left out rather than shown as 0.00."""
    a, b = colocated["summary"], fixed["summary"]
    said = []
    if (fixed["users"], fixed["long_tokens"]) != (colocated["users"], colocated["long_tokens"]):
        said.append(Said("l5_not_same_workload", {"users": colocated["users"], "tokens": colocated["long_tokens"],
                                                  "fixed_users": fixed["users"], "fixed_tokens": fixed["long_tokens"]},
                         Tone.WARNING))
    stall_a, stall_b = a["longest_stall_ms"] / 1000, b["longest_stall_ms"] / 1000
    x = stall_a / stall_b if stall_b > 0 else float("inf")
    shorter = x >= 2
    said.append(Said("l5_take_stall" if shorter else "l5_take_stall_same",
                     {"colocated": _r(stall_a, 2), "fixed": _r(stall_b, 2), "x": _r(x, 0)},
                     Tone.FINDING if shorter else Tone.WARNING))
    itl_a, itl_b = a["itl_before_ms"]["p50"], b["itl_before_ms"]["p50"]
    if not (math.isnan(itl_a) or math.isnan(itl_b)):
        decode = next((w for w in fixed["workers"] if w["role"] == "decode"), None)
        values = {"colocated": _r(itl_a, 0), "fixed": _r(itl_b, 0), "cores": _cores(decode),
                  "all_cores": sum(len(w["cores"]) for w in fixed["workers"])}
        if itl_b > (1 + SAME) * itl_a:
            if mode == Mode.DISAGGREGATED:
                key = ("l5_take_itl_slower_decode_cores" if decode and decode["cores"]
                       else "l5_take_itl_slower_disaggregated")
            else:
                key = "l5_take_itl_slower"
            said.append(Said(key, values))
        elif itl_b < (1 - SAME) * itl_a:
            said.append(Said("l5_take_itl_faster_disaggregated" if mode == Mode.DISAGGREGATED else "l5_take_itl_faster",
                             values))
        else:
            said.append(Said("l5_take_itl_same", values))
    split_a = colocated["ttft_split"][0] if colocated["ttft_split"] else None
    split_b = fixed["ttft_split"][0] if fixed["ttft_split"] else None
    if split_a and split_b:
        said.append(_ttft_reason(mode, split_a, split_b, fixed))
    said.append(Said(f"l5_take_before_{_compare(a['output_tok_per_s_before'], b['output_tok_per_s_before'])}"
                     + ("_disaggregated" if mode == Mode.DISAGGREGATED else "_chunked"),
                     {"colocated": _r(a["output_tok_per_s_before"]), "fixed": _r(b["output_tok_per_s_before"])}))
    whole = _compare(a["output_tok_per_s"], b["output_tok_per_s"])
    values = {"colocated": _r(a["output_tok_per_s"]), "fixed": _r(b["output_tok_per_s"]),
              "stall": _r(stall_a, 2), "fixed_stall": _r(stall_b, 2)}
    if whole == "same":
        said.append(Said("l5_take_whole_same", values))
    else:
        said.append(Said(f"l5_take_whole_{whole}_" + ("stall_shorter" if shorter else "stall_not_shorter"), values))
    return said


def _compare(colocated: float, fixed: float) -> str:
    """How the fixed run's figure compares with the colocated one's: higher, same or lower."""
    if abs(fixed - colocated) <= SAME * colocated:
        return "same"
    return "higher" if fixed > colocated else "lower"


def _cores(worker: dict | None) -> str:
    return str(len(worker["cores"])) if worker and worker["cores"] else "?"


SHOWN_S = 0.005   # a piece of time under this prints as 0.00 s: a sentence leaves it out


def _ttft_reason(mode: Mode, a: dict, b: dict, fixed: dict) -> Said:
    """Why the long prompt's TTFT moved: the piece of the split (queue, prefill, KV transfer, first
    token) that changed most names the sentence; the KV transfer is spoken of in disaggregated mode
    only, and only where it lasted long enough to print."""
    values = {"colocated": _r(a["ttft_s"]), "fixed": _r(b["ttft_s"]), "queue": _r(b["queue_s"], 2),
              "queue_colocated": _r(a["queue_s"], 2), "prefill": _r(b["prefill_s"], 2),
              "transfer": _r(b["transfer_s"], 2), "first": _r(b["first_token_s"], 2),
              "first_colocated": _r(a["first_token_s"], 2), "prefill_colocated": _r(a["prefill_s"], 2)}
    disaggregated = mode == Mode.DISAGGREGATED
    transfer_shown = disaggregated and b["transfer_s"] >= SHOWN_S
    rise = b["ttft_s"] - a["ttft_s"]
    if abs(rise) <= SAME * a["ttft_s"]:
        return Said("l5_take_ttft_same_transfer" if transfer_shown else "l5_take_ttft_same", values)
    parts = ["queue_s", "prefill_s", "first_token_s"] + (["transfer_s"] if disaggregated else [])
    change = {p: b[p] - a.get(p, 0.0) for p in parts}
    if rise < 0:
        main = min(change, key=change.get)
        return Said("l5_take_ttft_faster_" + main.removesuffix("_s"), values)
    main = max(change, key=change.get)
    if main == "queue_s":
        return Said("l5_take_ttft_queue", values)
    if main == "first_token_s":
        return Said("l5_take_ttft_first", values)
    if main == "transfer_s":
        return Said("l5_take_ttft_transfer", values)
    if not disaggregated:
        return Said("l5_take_ttft_chunks", values)
    prefill = next((w for w in fixed["workers"] if w["role"] == "prefill"), None)
    values.update(cores=_cores(prefill), all_cores=sum(len(w["cores"]) for w in fixed["workers"]))
    return Said("l5_take_ttft_prefill_cores" if transfer_shown else "l5_take_ttft_prefill_cores_overlapped", values)


# ---- page 7: where the KV cache lives ---------------------------------------------------------------

def tier_speedups(rows: list[dict]) -> dict[str, dict]:
    """Per request of the run: how many times faster than the cold one it was (measured), and how many
    times faster the lab's model says a hit can be: only the uncached tokens are computed, the copy
    counted as free (prompt / uncached tokens)."""
    cold = rows[0]["ttft_ms"]
    return {r["request"]: {"measured": cold / r["ttft_ms"],
                           "model": r["prompt_tokens"] / max(1, r["prompt_tokens"] - r["cached_tokens"])}
            for r in rows}


def tiers_takeaway(rows: list[dict], guess: float | None) -> list[Said]:
    """What the run says about the tiers, and what the learner's guess (how many times faster the other
    worker's answer, read from disk, would be) missed."""
    by = {r["request"]: r for r in rows}
    fast = tier_speedups(rows)
    other, expired = by["other_worker"], by["expired"]
    said = []
    if other["tier"] != "disk":
        return [Said("l7_take_no_disk_hit", {"tier": other["tier"]}, Tone.WARNING)]
    values = {"measured": _r(fast["other_worker"]["measured"]), "model": _r(fast["other_worker"]["model"]),
              "warm": _r(fast["warm"]["measured"]), "cached": other["cached_tokens"], "prompt": other["prompt_tokens"],
              "cold_ms": _r(by["cold"]["ttft_ms"], 0), "other_ms": _r(other["ttft_ms"], 0)}
    # The copy or the read cost most of what the model promised: say where the rest of the time went.
    key = "l7_take_disk_close" if fast["other_worker"]["measured"] >= 0.5 * fast["other_worker"]["model"] \
        else "l7_take_disk_costly"
    said.append(Said(key, values))
    if expired["tier"] == "disk":
        said.append(Said("l7_take_expired_disk", {"expired_ms": _r(expired["ttft_ms"], 0),
                                                  "cold_ms": values["cold_ms"]}))
    else:
        said.append(Said("l7_take_expired_recompute", {"expired_ms": _r(expired["ttft_ms"], 0)}, Tone.NOTE))
    if guess:
        ratio = guess / fast["other_worker"]["measured"]
        branch = ("l7_guess_close" if abs(ratio - 1) <= PREDICTION_TOLERANCE
                  else "l7_guess_low" if ratio < 1 else "l7_guess_high")
        said.append(Said(branch, {"guess": _r(guess), "measured": values["measured"], "model": values["model"]},
                         Tone.NOTE))
    return said


def traffic_hours(bytes_per_token: int, tokens_per_hour: float, host_gb: float, disk_tb: float) -> Said:
    """How many hours of a service's prompts each tier holds: its size over the KV the traffic makes."""
    per_hour = bytes_per_token * tokens_per_hour
    host_h, disk_h = host_gb * 1e9 / per_hour, disk_tb * 1e12 / per_hour
    return Said("l7_hours", {"kb": _r(bytes_per_token / 1e3, 0), "gb_per_hour": _r(per_hour / 1e9, 0),
                             "host_min": _r(60 * host_h, 0), "disk_h": _r(disk_h, 1)})


# ---- every experiment --------------------------------------------------------------------------

def spread_note(runs: list[dict]) -> Said | None:
    """When the same experiment ran more than once: how far its ITL p50 moved between runs, so that a
    smaller difference between two modes is not read as an effect."""
    itls = [r["summary"]["itl_before_ms"]["p50"] for r in runs if not math.isnan(r["summary"]["itl_before_ms"]["p50"])]
    if len(itls) < 2:
        return None
    low, high = min(itls), max(itls)
    return Said("run_spread", {"runs": len(itls), "low": _r(low, 0), "high": _r(high, 0),
                               "pct": _r(100 * (high - low) / low, 0)}, Tone.WARNING if high > (1 + SAME) * low
                else Tone.NOTE)


def machine_note(run: dict) -> Said | None:
    """A warning when other programs took cores while the run measured."""
    machine = run.get("machine")
    if not machine or not machine["busy"]:
        return None
    return Said("busy_machine", {"other": _r(machine["other_cores"], 2), "cores": machine["cores"]}, Tone.WARNING)


# ---- page 6 and 8: which transport moved the KV fastest ---------------------------------------------

def transport_timed(row: dict) -> bool:
    """Whether a transport's whole move was seen: a send after the prefill, or a push whose writes inside
    the prefill were timed (shm's copies). NIXL's writes run on their own during the prefill and are not
    timed: only what was left after the prefill is known, which is no measure of the transport."""
    writing = row.get("writing_ms", 0.0)
    return not row["during_prefill"] or (not math.isnan(writing) and writing > 0)


def moving_ms(row: dict) -> float:
    """The time the bytes were seen moving: the writes inside the prefill and what followed it."""
    return row.get("moving_ms", row["writing_ms"] + row["total_ms"])


def fastest_transport(rows: list[dict]) -> dict | None:
    """The transport whose bytes were seen moving for the shortest time, among those timed whole; None
    when none was."""
    timed = [r for r in rows if transport_timed(r)]
    return min(timed, key=moving_ms) if timed else None

