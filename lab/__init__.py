"""The lab: workloads, experiments and figures, on top of the engine's API (no Streamlit here)."""
