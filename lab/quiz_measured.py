"""Quiz questions built from the learner's own measurements: the numbers of pages 1, 4, 5 and 6, or,
where a page was not run in this session, the lab's benchmark results in results/ (and the question
says which). Each question has one right answer and distractors computed from the mistakes people
make in this field: bytes read as bits, a bidirectional link figure, query heads counted instead of
KV heads, a stall thought to be shared among users, prefill timed at decode speed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .i18n import LANGUAGES, num, t
from .kv_calculator import MODELS
from .quiz import Question

RESULTS = Path(__file__).resolve().parents[1] / "results"
DISTINCT = 1.15           # any two options differ by at least this factor, so exactly one is right
LONG_PROMPT = 16_000      # tokens: the prompt the stall question asks about
RDMA_GBPS = 25.0          # GB/s, one direction: a 200 Gb/s RDMA NIC
CHUNK, CHUNKED_PROMPT = 256, 2000
QUERY_PER_KV_HEAD = 3     # SmolLM2-135M: 9 query heads share 3 KV heads
LAB_KV_BYTES_PER_TOKEN = MODELS["SmolLM2-135M"].bytes_per_token(4)   # the lab's engine keeps fp32 KV on CPU


@dataclass(frozen=True)
class Figures:
    """What the measured questions need, and whether each group came from this session's runs."""
    prefill_tok_s: float
    decode_ms_1: float
    decode_ms_16: float
    users: int
    itl_ms: float
    kv_tokens: int
    kv_bytes: int
    shm_ms: float                # the whole time its bytes moved (inside the prefill and after it)
    colocated_ttft_s: float      # the long prompt's, on all the cores (page 4)
    disaggregated_ttft_s: float  # the same prompt disaggregated (page 5), prefill on a share of the cores
    transfer_s: float            # its KV transfer
    mine: frozenset[str]         # groups measured by the learner: "stages", "problem", "fix", "transports"


def learner_figures(results: dict, folder: Path = RESULTS) -> Figures:
    """The learner's numbers where a page ran; results/ (the lab's benchmark run) elsewhere."""
    bench = json.loads((folder / "engine_bench_float32.json").read_text())
    runs = {r["label"]: r for r in json.loads((folder / "interference.json").read_text())["runs"]}
    colocated_run, disaggregated_run = runs["colocated"], runs["disaggregated 1P1D shm"]
    transfer = max(disaggregated_run["transfer"], key=lambda x: x["tokens"])   # the long prompt's
    f = dict(prefill_tok_s=bench["prefill_tok_s"]["2048"], decode_ms_1=bench["decode_step_ms"]["1"],
             decode_ms_16=bench["decode_step_ms"]["16"], users=bench["itl_6_streams"]["streams"],
             itl_ms=bench["itl_6_streams"]["itl_p50_ms"], kv_tokens=transfer["tokens"], kv_bytes=transfer["bytes"],
             shm_ms=1000 * (transfer["writing_s"] + transfer["total_s"]),
             colocated_ttft_s=colocated_run["long_ttft_s"][0],
             disaggregated_ttft_s=disaggregated_run["long_ttft_s"][0], transfer_s=transfer["total_s"])
    mine = set()
    if "stages" in results:
        stages = results["stages"]
        f.update(prefill_tok_s=stages["prefill"][-1]["tok_s"], decode_ms_1=stages["decode"][0]["step_ms"],
                 decode_ms_16=stages["decode"][-1]["step_ms"])
        mine.add("stages")
    if "problem" in results:
        problem = results["problem"]
        f.update(users=problem["users"], itl_ms=problem["summary"]["itl_before_ms"]["p50"])
        mine.add("problem")
    if "problem" in results and "fix_disaggregated" in results:
        a, b = results["problem"]["ttft_split"], results["fix_disaggregated"]["ttft_split"]
        if a and b:
            f.update(colocated_ttft_s=a[0]["ttft_s"], disaggregated_ttft_s=b[0]["ttft_s"],
                     transfer_s=b[0]["transfer_s"])
            mine.add("fix")
    if results.get("transports"):
        shm = next((m for m in results["transports"] if m["transport"] == "shm"), None)
        if shm:
            f.update(kv_tokens=round(shm["bytes"] / LAB_KV_BYTES_PER_TOKEN), kv_bytes=shm["bytes"],
                     shm_ms=shm["writing_ms"] + shm["total_ms"])
            mine.add("transports")
    return Figures(**f, mine=frozenset(mine))


def measured_questions(fig: Figures) -> list[Question]:
    return [_stall(fig), _batch(fig), _transfer(fig), _chunk(fig), _own_machine(fig)]


# ---- the questions ---------------------------------------------------------------------------------------

def _stall(f: Figures) -> Question:
    right = LONG_PROMPT / f.prefill_tok_s
    return _numeric("stall-16k", "problem", "stages" in f.mine and "problem" in f.mine, "s",
                    {"tokens": LONG_PROMPT, "rate": f"{f.prefill_tok_s:.0f}", "users": f.users},
                    right, {"shared": right / f.users, "decode-speed": LONG_PROMPT * f.decode_ms_1 / 1000,
                            "no-stall": f.itl_ms / 1000})


def _batch(f: Figures) -> Question:
    right = 16 * 1000 / f.decode_ms_16
    return _numeric("batch-16", "stages", "stages" in f.mine, "tok_s",
                    {"ms1": f"{f.decode_ms_1:.0f}", "ms16": f"{f.decode_ms_16:.0f}"},
                    right, {"per-sequence": 1000 / f.decode_ms_16, "free-batching": 16 * 1000 / f.decode_ms_1,
                            "one-sequence": 1000 / f.decode_ms_1, "ms-as-s": right / 1000})


def _transfer(f: Figures) -> Question:
    right = f.kv_bytes / (RDMA_GBPS * 1e9)
    return _numeric("kv-over-rdma", "travel", "transports" in f.mine, "ms",
                    {"tokens": f.kv_tokens, "mb": f"{f.kv_bytes / 1e6:.0f}", "shm": f"{f.shm_ms:.0f}",
                     "gbps": f"{RDMA_GBPS:.0f}"},
                    1000 * right, {"bits": 8000 * right, "query-heads": 1000 * QUERY_PER_KV_HEAD * right,
                                   "both-directions": 500 * right})


def _chunk(f: Figures) -> Question:
    right = CHUNK / f.prefill_tok_s
    return _numeric("chunk-stall", "fix", "stages" in f.mine, "s",
                    {"tokens": CHUNKED_PROMPT, "chunk": CHUNK, "rate": f"{f.prefill_tok_s:.0f}"},
                    right, {"whole-prompt": CHUNKED_PROMPT / f.prefill_tok_s, "no-stall": f.itl_ms / 1000,
                            "decode-speed": CHUNK * f.decode_ms_1 / 1000})


def _own_machine(f: Figures) -> Question:
    right = f.colocated_ttft_s + f.transfer_s   # all the cores for the prefill, then the hand-off
    return _numeric("own-prefill-machine", "fix", "fix" in f.mine, "s",
                    {"colocated": f.colocated_ttft_s, "disaggregated": f.disaggregated_ttft_s,
                     "transfer": f.transfer_s},
                    right, {"no-change": f.disaggregated_ttft_s, "halved": f.disaggregated_ttft_s / 2,
                            "no-transfer": f.colocated_ttft_s, "added": f.colocated_ttft_s + f.disaggregated_ttft_s})


def _numeric(qid: str, page: str, mine: bool, unit: str, values: dict, right: float,
             mistakes: dict[str, float]) -> Question:
    """A question whose options are the right value and the values the named mistakes give; a mistake
    too close to an option already kept is left out, so exactly one option is right."""
    kept = {"right": right}
    for name, value in mistakes.items():
        if value > 0 and all(max(value, v) / min(value, v) >= DISTINCT for v in kept.values()):
            kept[name] = value
    options = [{"id": oid, **{lang: _amount(lang, v, unit) for lang in LANGUAGES}}
               for oid, v in sorted(kept.items(), key=lambda kv: kv[1])]
    source = "quiz_source_mine" if mine else "quiz_source_results"
    text = {lang: t(lang, f"qm_{qid}", **values) + " " + t(lang, source) for lang in LANGUAGES}
    mistakes_told = {lang: " ".join(t(lang, f"qm_{qid}_{oid}", value=_amount(lang, v, unit))
                                    for oid, v in kept.items() if oid != "right") for lang in LANGUAGES}
    explanation = {lang: t(lang, f"qm_{qid}_why", answer=_amount(lang, right, unit), **values) + " "
                   + mistakes_told[lang] for lang in LANGUAGES}
    return Question(qid, page, "single", text, options, frozenset({"right"}), explanation)


def _amount(lang: str, value: float, unit: str) -> str:
    """Three significant digits at most, thousands grouped as the language does: 1,290 tokens/s, 1 290 токенов/с."""
    return f"{num(lang, value, ',.0f' if value >= 100 else '.3g')} {t(lang, f'unit_{unit}')}"
