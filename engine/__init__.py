"""The pd-lab inference engine, in three rooms, each depending only on the ones before it:

core/     one process: a model, a paged KV pool, a scheduler, step() = schedule -> forward -> sample
cluster/  many processes: a worker per device (GPU or CPU cores), a router, KV transports between them
server/   an OpenAI-compatible HTTP server over a cluster

metrics.py (TTFT, ITL, TPOT, goodput) is shared by all three and by the lab. No Streamlit here.
"""
