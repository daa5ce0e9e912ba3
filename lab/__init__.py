"""The lab: targets, workloads, experiments and figures on top of the engine's API. Streamlit lives in
lab/ui.py alone, so everything else here runs from scripts and tests without it."""
