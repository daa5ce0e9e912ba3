import json
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from lab.i18n import t
from lab.planner.hardware import GPUS, LINKS, MODELS
from lab.planner.search import attainment_curve, plan
from lab.planner.simulator import SLO, Hardware, Workload

CALIBRATION = Path(__file__).resolve().parents[1] / "results" / "planner_calibration.json"

lang = st.session_state.get("lang", "en")
st.title(t(lang, "plan_title"))
st.markdown(t(lang, "plan_text"))
c1, c2, c3, c4 = st.columns(4)
model = c1.selectbox(t(lang, "plan_model"), list(MODELS), index=0, key="plan_model")
gpu = c2.selectbox(t(lang, "plan_gpu"), list(GPUS), index=0, key="plan_gpu")
link = c3.selectbox(t(lang, "plan_link"), list(LINKS), key="plan_link")
gpus = c4.number_input(t(lang, "plan_gpus"), 1, 16, 3, key="plan_gpus")
c1, c2, c3, c4 = st.columns(4)
prompt = c1.number_input(t(lang, "plan_prompt"), 1, 131072, 512, key="plan_prompt")
output = c2.number_input(t(lang, "plan_output"), 1, 16384, 64, key="plan_output")
ttft = c3.number_input(t(lang, "plan_ttft"), 0.01, 60.0, 0.4, key="plan_ttft")
tpot = c4.number_input(t(lang, "plan_tpot"), 0.001, 5.0, 0.04, format="%.3f", key="plan_tpot")

if st.button(t(lang, "plan_button"), key="plan", type="primary"):
    try:
        hw = Hardware(MODELS[model], GPUS[gpu], LINKS[link])
        workload, slo = Workload(1.0, int(prompt), int(output)), SLO(ttft, tpot)
        st.session_state["plan_result"] = (hw, workload, slo, plan(hw, workload, slo, int(gpus)))
    except ValueError as exc:
        st.error(str(exc))
if "plan_result" in st.session_state:
    hw, workload, slo, results = st.session_state["plan_result"]
    best = results[0]
    st.success(t(lang, "plan_best", gpus=best.placement.total_gpus, placement=best.placement.label,
                 per_gpu=best.per_gpu))
    labels = [r.placement.label for r in results]
    st.plotly_chart(go.Figure(go.Bar(x=labels, y=[r.per_gpu for r in results])).update_layout(
        title=t(lang, "plan_fig_goodput"), yaxis_title="req/s per GPU", height=320), key="goodput")
    top_rate = max(r.goodput for r in results) * 1.5 or 1.0
    rates = [top_rate * k / 12 for k in range(1, 13)]
    fig = go.Figure()
    for r in results:
        curve = attainment_curve(hw, r.placement, workload, slo, rates)
        fig.add_trace(go.Scatter(x=rates, y=curve, name=r.placement.label))
    fig.add_hline(y=slo.attainment, line_dash="dash")
    st.plotly_chart(fig.update_layout(title=t(lang, "plan_fig_attainment"), xaxis_title="req/s",
                                      yaxis_title="SLO attainment", height=340), key="attainment")

st.subheader(t(lang, "plan_calibration"))
if CALIBRATION.exists():
    st.dataframe(pd.DataFrame(json.loads(CALIBRATION.read_text())["rows"]), hide_index=True)
else:
    st.info(t(lang, "plan_calibration_missing"))
