"""The OpenAI-compatible HTTP server over a cluster (app.py), its API shapes and Prometheus metrics."""
