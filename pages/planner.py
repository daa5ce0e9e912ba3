import json
import re
from pathlib import Path

import streamlit as st

from lab.i18n import t
from lab.planner import figures
from lab.planner.hardware import GPUS, LINKS, MODELS
from lab.planner.search import attainment_curve, crossovers, pareto_front, plan_report, prompt_sweep
from lab.planner.scenario import SLO, Hardware, Workload
from lab.ui import page_frame, show_table, translated_choice


def calibration_row(lang: str, row: dict) -> dict:
    """A row of the calibration results, its step and size named in the learner's language."""
    numbers = [int(n) for n in re.findall(r"\d+", row["size"])]
    size = {"decode": "size_batch", "prefill": "size_tokens", "mixed": "size_mixed"}[row["step"]]
    names = dict(zip(("a", "b"), numbers))
    return {**row, "step": t(lang, f"phase_{row['step']}"), "size": t(lang, size, **names)}


PRESET_CHOICES = {"model": MODELS, "gpu": GPUS, "link": LINKS}
PRESET_NUMBERS = {"gpus": (int, 1, 8), "prompt": (int, 1, 131072), "output": (int, 1, 16384),
                  "ttft": (float, 0.01, 60.0), "tpot": (float, 0.001, 5.0)}


def apply_preset(query: dict) -> None:
    """A link from the quiz fills the inputs in (?model=...&gpus=...); once per distinct link, so the
    learner can change them afterwards. Values out of range or unknown, and other parameters (?lang=), are
    ignored."""
    query = {name: value for name, value in query.items() if name in PRESET_CHOICES or name in PRESET_NUMBERS}
    if not query or st.session_state.get("plan_preset") == query:
        return
    st.session_state["plan_preset"] = query
    for name, options in PRESET_CHOICES.items():
        if query.get(name) in options:
            st.session_state[f"plan_{name}"] = query[name]
    for name, (kind, low, high) in PRESET_NUMBERS.items():
        try:
            value = kind(query[name])
        except (KeyError, ValueError):
            continue
        if low <= value <= high:
            st.session_state[f"plan_{name}"] = value


CALIBRATION = Path(__file__).resolve().parents[1] / "results" / "planner_calibration.json"
SWEEP_PROMPTS = [64, 128, 256, 512, 1024, 2048, 4096, 8192]
ATTAINMENT_LINES = 5   # the best placements only: a large budget has dozens

lang = page_frame("plan_title")
apply_preset(st.query_params.to_dict())
st.markdown(t(lang, "plan_text"))
c1, c2, c3, c4 = st.columns(4)
model = c1.selectbox(t(lang, "plan_model"), list(MODELS), index=0, key="plan_model")
gpu = c2.selectbox(t(lang, "plan_gpu"), list(GPUS), index=0, key="plan_gpu")
link = translated_choice(c3.selectbox, t(lang, "plan_link"), LINKS, "plan_link", lang,
                         format_func=lambda name: name.replace("Gb/s", t(lang, "unit_gbit_s")))
gpus = c4.number_input(t(lang, "plan_gpus"), 1, 8, 3, key="plan_gpus")   # one node: TP and splits in seconds
c1, c2, c3, c4, c5 = st.columns(5)
prompt = c1.number_input(t(lang, "plan_prompt"), 1, 131072, 512, key="plan_prompt")
output = c2.number_input(t(lang, "plan_output"), 1, 16384, 64, key="plan_output")
spread = c3.number_input(t(lang, "plan_spread"), 0.0, 0.95, 0.0, step=0.1, key="plan_spread")
ttft = c4.number_input(t(lang, "plan_ttft"), 0.01, 60.0, 0.4, key="plan_ttft")
tpot = c5.number_input(t(lang, "plan_tpot"), 0.001, 5.0, 0.04, format="%.3f", key="plan_tpot")
PRECISIONS = {"bf16": (False, False), "fp8_weights": (True, False), "fp8_all": (True, True)}
precision = translated_choice(st.selectbox, t(lang, "plan_precision"), PRECISIONS, "plan_precision", lang,
                              format_func=lambda p: t(lang, f"precision_{p}"))
# What every result below was computed from: a result kept from other inputs says so.
inputs = dict(model=model, gpu=gpu, link=link, gpus=int(gpus), prompt=int(prompt), output=int(output),
              spread=float(spread), ttft=float(ttft), tpot=float(tpot), precision=precision)


def keep(key: str, compute) -> None:
    """Run `compute(hw, workload, slo)` on the inputs and keep its result with the inputs it was computed
    from, or say why they are refused."""
    st.session_state.pop(key, None)
    try:
        hw = Hardware(MODELS[model], GPUS[gpu], LINKS[link]).with_fp8(*PRECISIONS[precision])
        workload, slo = Workload(1.0, int(prompt), int(output), spread=spread), SLO(ttft, tpot)
        with st.spinner():
            st.session_state[key] = compute(hw, workload, slo)
        st.session_state[f"{key}_inputs"] = inputs
    except ValueError as exc:
        st.error(str(exc))


def mark_stale(key: str, button: str, unused: tuple[str, ...] = ()) -> None:
    """A warning over a result computed from other inputs than those on the page now (other than the
    `unused` ones, which that result does not depend on)."""
    kept = st.session_state.get(f"{key}_inputs") or {}
    if any(kept.get(name) != value for name, value in inputs.items() if name not in unused):
        st.warning(t(lang, "plan_stale", button=t(lang, button)))


if st.button(t(lang, "plan_button"), key="plan", type="primary"):
    keep("plan_result", lambda hw, workload, slo: (hw, workload, slo, plan_report(hw, workload, slo, int(gpus))))
if "plan_result" in st.session_state:
    mark_stale("plan_result", "plan_button")
    hw, workload, slo, report = st.session_state["plan_result"]
    results = report.results
    best = results[0]
    st.success(t(lang, "plan_best", gpus=best.placement.total_gpus, placement=best.placement.label,
                 per_gpu=best.per_gpu))
    if best.at_bound:   # the SLOs would allow more: the hardware does not
        st.info(t(lang, "plan_at_bound"))
    st.plotly_chart(figures.goodput_bars(results, t(lang, "plan_fig_goodput"), lang), key="goodput")
    show_table(lang, [{"placement": r.placement.label, "rps_per_gpu": r.per_gpu, "tokens_per_gpu": r.tokens_per_gpu,
                       "ttft_p50_s": r.ttft_s[0], "ttft_p90_s": r.ttft_s[1], "tpot_p50_ms": 1000 * r.tpot_s[0],
                       "tpot_p90_ms": 1000 * r.tpot_s[1]} for r in results])
    for label, why in report.dropped:
        st.caption(t(lang, "plan_dropped", placement=label, reason=why))
    top_rate = max(r.goodput for r in results) * 1.5 or 1.0
    rates = [top_rate * k / 12 for k in range(1, 13)]
    curves = {r.placement.label: attainment_curve(hw, r.placement, workload, slo, rates)
              for r in results[:ATTAINMENT_LINES]}
    st.plotly_chart(figures.attainment_lines(rates, curves, slo.attainment, t(lang, "plan_fig_attainment"), lang),
                    key="attainment")

st.markdown(t(lang, "plan_pareto_text"))
if st.button(t(lang, "plan_pareto_button"), key="pareto"):
    keep("plan_pareto", lambda hw, workload, slo: pareto_front(hw, workload, slo, int(gpus)))
if st.session_state.get("plan_pareto"):
    mark_stale("plan_pareto", "plan_pareto_button")
    fronts = st.session_state["plan_pareto"]
    st.plotly_chart(figures.pareto_lines(fronts, t(lang, "plan_fig_pareto"), lang), key="pareto_chart")
    most = max((p for front in fronts.values() for p in front), key=lambda p: p.tokens_per_gpu)
    fastest = max((p for front in fronts.values() for p in front), key=lambda p: p.tokens_per_user)
    st.info(t(lang, "plan_pareto_take", gpu_kind=t(lang, f"mode_{most.mode}"), gpu_placement=most.placement,
              gpu_tokens=f"{most.tokens_per_gpu:.0f}", gpu_user=f"{most.tokens_per_user:.0f}",
              user_kind=t(lang, f"mode_{fastest.mode}"), user_placement=fastest.placement,
              user_tokens=f"{fastest.tokens_per_user:.0f}", user_gpu=f"{fastest.tokens_per_gpu:.0f}"))

st.markdown(t(lang, "plan_sweep_text"))
if st.button(t(lang, "plan_sweep_button"), key="sweep"):
    keep("plan_sweep", lambda hw, workload, slo: prompt_sweep(hw, workload, slo, int(gpus), SWEEP_PROMPTS))
if "plan_sweep" in st.session_state:
    mark_stale("plan_sweep", "plan_sweep_button", unused=("prompt",))   # it tries its own prompt lengths
    points = st.session_state["plan_sweep"]
    crossings = crossovers(points)
    st.plotly_chart(figures.crossover_lines(points, crossings, t(lang, "plan_fig_crossover"), lang), key="crossover")
    st.success(figures.sweep_sentence(points, lang))
    for a, b in crossings:
        st.info(t(lang, "plan_crossover_at", low=a.prompt_tokens, high=b.prompt_tokens,
                  before=t(lang, f"winner_{a.winner}"), after=t(lang, f"winner_{b.winner}")))
    if not crossings:
        winners = sorted({t(lang, f"winner_{outcome}") for outcome in figures.sweep_outcomes(points)})
        st.info(t(lang, "plan_no_crossover", winners=", ".join(winners)))

st.subheader(t(lang, "plan_calibration"))
st.markdown(t(lang, "plan_calibration_text"))
if CALIBRATION.exists():
    calibration = json.loads(CALIBRATION.read_text())
    rows = [calibration_row(lang, row) for row in calibration["rows"]]
    st.caption(t(lang, "plan_calibration_summary", machine=calibration["machine"], peak=calibration["peak_gflops"],
                 bandwidth=calibration["bandwidth_gbs"], step=calibration["layer_overhead_us"],
                 token=calibration["token_overhead_us"], sequence=calibration["sequence_overhead_us"],
                 target=calibration["target_pct"],
                 verdict=t(lang, "plan_within" if calibration["within_target"] else "plan_outside")))
    left, right = st.columns(2)
    left.plotly_chart(figures.calibration_scatter(rows, calibration["target_pct"],
                                                  t(lang, "plan_fig_calibration"), lang), key="calibration")
    right.plotly_chart(figures.efficiency_lines(calibration, t(lang, "plan_fig_efficiency"), lang), key="efficiency")
    show_table(lang, rows)
else:
    st.info(t(lang, "plan_calibration_missing"))
