"""Does watching the engine slow it down? The dashboard's workload with and without the dashboard open.

The same run, alternating in each round:
- without: the lab's LiveLab (what the dashboard calls) in this process, no UI: a colocated engine,
  6 chat users of 48 tokens (the dashboard's defaults), a 4000-token prompt injected 15 s after the
  users start, the run saved 45 s later;
- with: the lab served by Streamlit and driven by Debian's Chromium through Playwright, clicking the
  same buttons at the same times while the dashboard refreshes its charts.
Both read the saved run's summary (client-side timestamps, lab/interference.py). Also measured: the CPU
seconds the lab's own process (the load's clients, and Streamlit when open; not its engine workers) and
the browser used meanwhile.

    python benchmarks/observer_effect.py [--rounds 2]

Prints a table and writes results/observer_effect.json and .md. Needs /usr/bin/chromium and playwright
(`make test` installs both). About 2.5 minutes a run on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.reference_tools import chromium_page, cpu_model, free_port, server  # noqa: E402
from lab.live_lab import LabStatus, LiveLab  # noqa: E402
from lab.load_generator import ChatLoad  # noqa: E402
from lab.target import TargetSpec  # noqa: E402

RESULTS = ROOT / "results"
USERS, OUTPUT_TOKENS, LONG_TOKENS = 6, 48, 4000   # the dashboard's defaults
BEFORE_INJECT_S, AFTER_INJECT_S = 15.0, 45.0


def without_dashboard(runs: Path) -> dict:
    lab = LiveLab(runs)
    lab.start_target(TargetSpec())
    deadline = time.monotonic() + 300
    while lab.status == LabStatus.STARTING and time.monotonic() < deadline:
        time.sleep(0.2)
    if lab.status != LabStatus.READY:
        raise RuntimeError(f"the engine did not start: {lab.status} {lab.error}")
    try:
        before = _cpu(psutil.Process())
        lab.start_load(ChatLoad(users=USERS, output_tokens=OUTPUT_TOKENS))
        time.sleep(BEFORE_INJECT_S)
        lab.inject(LONG_TOKENS)
        time.sleep(AFTER_INJECT_S)
        lab_cpu = _cpu(psutil.Process()) - before
        folder = lab.record("without dashboard")
    finally:
        lab.stop_target()
    return {**_summary(folder), "lab_cpu_s": round(lab_cpu, 1), "browser_cpu_s": None}


def with_dashboard(runs: Path) -> dict:
    from playwright.sync_api import expect, sync_playwright
    port = free_port()
    command = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(port),
               "--server.headless", "true"]
    with server(command, port, {**os.environ, "PDLAB_RUNS": str(runs)}, health="/_stcore/health") as url, \
            sync_playwright() as p:
        ui = next(c for c in psutil.Process().children() if "streamlit" in " ".join(c.cmdline()))
        browser, page = chromium_page(p, 1500, 1900)
        page.goto(url)
        page.get_by_role("button", name="Start engine").click()
        expect(page.get_by_text("worker-0 (colocated")).to_be_visible(timeout=300_000)
        chrome = _browser_processes()
        ui_before, chrome_before = _cpu(ui), sum(_cpu(c) for c in chrome)
        page.get_by_role("button", name="Start users").click()
        page.wait_for_timeout(BEFORE_INJECT_S * 1000)
        page.get_by_role("button", name="Inject long prompt").click()
        page.wait_for_timeout(AFTER_INJECT_S * 1000)
        ui_cpu, chrome_cpu = _cpu(ui) - ui_before, sum(_cpu(c) for c in chrome) - chrome_before
        page.get_by_role("button", name="Save this run").click()
        expect(page.get_by_text("Saved to")).to_be_visible(timeout=60_000)
        browser.close()
    folder = max(runs.iterdir(), key=lambda f: f.stat().st_mtime)
    return {**_summary(folder), "lab_cpu_s": round(ui_cpu, 1), "browser_cpu_s": round(chrome_cpu, 1)}


def _browser_processes() -> list[psutil.Process]:
    return [c for c in psutil.Process().children(recursive=True) if "chrom" in c.name().lower()]


def _cpu(process: psutil.Process) -> float:
    """CPU seconds of the process alone (not its children: the lab's engine workers are children)."""
    try:
        times = process.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return times.user + times.system


def _summary(folder: Path) -> dict:
    s = json.loads((folder / "summary.json").read_text())
    ttft = s["long_ttft_s"][0] if s["long_ttft_s"] else None
    if ttft is None:
        raise RuntimeError(f"the long prompt had no first token {AFTER_INJECT_S:.0f} s after it was sent ({folder})")
    return {"itl_p50_ms": s["itl_before_ms"]["p50"], "itl_p99_ms": s["itl_before_ms"]["p99"], "long_ttft_s": ttft,
            "stall_s": round(s["longest_stall_ms"] / 1000, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="pdlab-observer-") as tmp:
        for round_ in range(1, args.rounds + 1):
            for name, run in (("without dashboard", without_dashboard), ("with dashboard", with_dashboard)):
                runs = Path(tmp) / f"{round_}-{name.replace(' ', '-')}"
                runs.mkdir()
                print(f"round {round_}: {name}", flush=True)
                rows.append({"round": round_, "run": name, **run(runs)})
                print(rows[-1], flush=True)
    ratios = {}
    for metric in ("itl_p50_ms", "long_ttft_s"):
        alone = statistics.median(r[metric] for r in rows if r["run"] == "without dashboard")
        watched = statistics.median(r[metric] for r in rows if r["run"] == "with dashboard")
        ratios[metric] = round(watched / alone, 2)
    machine = f"{cpu_model()}, {os.cpu_count()} cores"
    header = "| round | run | ITL p50 before (ms) | ITL p99 before (ms) | long-prompt TTFT (s) | longest stall (s) " \
             "| lab process CPU (s) | browser CPU (s) |"
    lines = [f"# Observer effect ({machine})", "", header, "|" + "---|" * 8]
    for r in rows:
        lines.append(f"| {r['round']} | {r['run']} | {r['itl_p50_ms']} | {r['itl_p99_ms']} | {r['long_ttft_s']} | "
                     f"{r['stall_s']} | {r['lab_cpu_s']} | "
                     f"{r['browser_cpu_s'] if r['browser_cpu_s'] is not None else '-'} |")
    lines += ["", f"With the dashboard open / without (medians): ITL p50 {ratios['itl_p50_ms']}x, "
                  f"long-prompt TTFT {ratios['long_ttft_s']}x (goal: at most 1.15x each).",
              f"CPU columns: seconds used from the users' start to the save ({BEFORE_INJECT_S + AFTER_INJECT_S:.0f} s "
              "of wall time); the lab process (this one, or Streamlit's) runs the load's clients; its engine workers "
              "are not counted."]
    table = "\n".join(lines)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "observer_effect.md").write_text(table + "\n")
    record = {"machine": machine, "rows": rows, "ratios": ratios}
    (RESULTS / "observer_effect.json").write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
