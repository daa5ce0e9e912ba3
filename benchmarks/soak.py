"""Soak: the server under mixed good and bad traffic for minutes, in every mode, with workers killed.

Per mode, a real `python -m engine serve` process gets, at once: chat streams that must complete,
bad requests of ten kinds, clients that cut their connection mid-stream, injected long prompts,
and SIGKILL for a worker of each role. Every request ends in exactly one column:
  completed     the answer arrived whole
  clear error   an OpenAI-shaped error with a message (HTTP status or an error event in the stream)
  cut by client the client hung up on purpose (those test that the server frees them)
  lost          anything else: no answer, a broken stream, a hang (goal: none)
"healthy failed" counts good requests that ended in an error outside the seconds after a worker
was killed (goal: none: no request is hurt by another's input). Then the server gets SIGTERM; the
processes, shared-memory segments, semaphores and KV folders it leaves are counted (goal: none).
Prints a table and writes results/soak.json and results/soak.md.
  python benchmarks/soak.py [--seconds 180] [--modes colocated chunked disaggregated]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.reference_tools import free_port  # noqa: E402
from engine.cluster.transports import leaked_kv_folders, leaked_shm_segments  # noqa: E402
RESULTS = ROOT / "results"
KILL_WINDOW_S = 30.0   # after a kill, errors of healthy requests are expected: their worker died
BAD_REQUESTS = [  # (what, path, body as bytes) each must get a clear 4xx
    ("tiny temperature (served)", "/v1/completions", {"prompt": "Hi", "max_tokens": 4, "temperature": 1e-40}),
    ("seed 2**64", "/v1/completions", {"prompt": "Hi", "max_tokens": 4, "seed": 2 ** 64}),
    ("negative max_tokens", "/v1/completions", {"prompt": "Hi", "max_tokens": -1}),
    ("empty prompt", "/v1/completions", {"prompt": "", "max_tokens": 4}),
    ("unknown model", "/v1/completions", {"model": "nope", "prompt": "Hi"}),
    ("prompt too long", "/v1/completions", {"prompt": "word " * 9000, "max_tokens": 4}),
    ("wrong types", "/v1/chat/completions", {"messages": "hello", "max_tokens": 4}),
    ("malformed JSON", "/v1/completions", b"{not json"),
    ("invalid UTF-8", "/v1/completions", b'{"prompt": "\xff\xfe", "max_tokens": 4}'),
    ("oversized body", "/v1/completions", {"prompt": "Hi", "user": "x" * (5 * 2 ** 20)}),
]


def leftovers() -> dict[str, set[str]]:
    return {"shm": set(leaked_shm_segments()), "semaphores": {p.name for p in Path("/dev/shm").glob("sem.mp-*")},
            "kv folders": set(leaked_kv_folders())}


class Tally:
    def __init__(self):
        self.outcomes: Counter = Counter()
        self.healthy_failed: list[str] = []
        self.lost: list[str] = []
        self.kills: list[float] = []
        self.lock = threading.Lock()

    def add(self, outcome: str, healthy: bool = False, detail: str = "") -> None:
        with self.lock:
            self.outcomes[outcome] += 1
            after_kill = any(0 <= time.monotonic() - k <= KILL_WINDOW_S for k in self.kills)
            if healthy and outcome == "clear error" and not after_kill:
                self.healthy_failed.append(detail)
            if outcome == "lost":
                self.lost.append(detail)


def stream(client: httpx.Client, body: dict, cut_after: int | None = None) -> tuple[str, str]:
    """(outcome, detail) of one streamed request."""
    try:
        with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as response:
            if response.status_code != 200:
                response.read()
                message = response.json().get("error", {}).get("message")
                return ("clear error", message) if message else ("lost", f"HTTP {response.status_code}")
            tokens = 0
            for line in response.iter_lines():
                if line == "data: [DONE]":
                    return "completed", ""
                if line.startswith("data: "):
                    chunk = json.loads(line[6:])
                    if "error" in chunk:
                        return "clear error", chunk["error"].get("message", "")
                    tokens += 1
                    if cut_after is not None and tokens >= cut_after:
                        return "cut by client", ""
            return "lost", "stream ended without [DONE] or an error"
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        return "lost", f"{type(exc).__name__}: {exc}"


def chat_user(base: str, tally: Tally, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=base, timeout=180) as client:
        while not stop.is_set():
            body = {"prompt": f"Question {rng.randrange(1000)}: what is a KV cache?",
                    "max_tokens": rng.randrange(16, 64), "ignore_eos": True,
                    "temperature": rng.choice([0.0, 0.7, 1e-40])}
            outcome, detail = stream(client, body)
            tally.add(outcome, healthy=True, detail=detail)
            if outcome != "completed":
                stop.wait(1.0)   # as a client would before it retries


def bad_requests(base: str, tally: Tally, stop: threading.Event) -> None:
    with httpx.Client(base_url=base, timeout=120) as client:
        i = 0
        while not stop.wait(0.7):
            what, path, body = BAD_REQUESTS[i % len(BAD_REQUESTS)]
            i += 1
            try:
                r = client.post(path, content=body if isinstance(body, bytes) else json.dumps(body).encode(),
                                headers={"content-type": "application/json"})
                ok = r.status_code == 200 and "served" in what
                clear = r.status_code >= 400 and r.json().get("error", {}).get("message")
                tally.add("completed" if ok else "clear error" if clear else "lost", detail=what)
            except (httpx.HTTPError, ValueError) as exc:
                tally.add("lost", detail=f"{what}: {exc}")


def cut_connections(base: str, tally: Tally, stop: threading.Event) -> None:
    with httpx.Client(base_url=base, timeout=120) as client:
        while not stop.wait(3.0):
            outcome, detail = stream(client, {"prompt": "Tell me a long story.", "max_tokens": 400,
                                              "ignore_eos": True}, cut_after=2)
            tally.add(outcome, detail=detail)


def long_prompts(base: str, tally: Tally, stop: threading.Event) -> None:
    with httpx.Client(base_url=base, timeout=300) as client:
        while not stop.wait(25.0):
            outcome, detail = stream(client, {"prompt": "Summarise: " + "the cache moves between workers. " * 500,
                                              "max_tokens": 8, "ignore_eos": True})
            tally.add(outcome, healthy=True, detail=detail)


def soak(mode: str, seconds: float) -> dict:
    before = leftovers()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--mode", mode, "--port", str(port),
                               "--kv-cache-tokens", "8192"], cwd=ROOT, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    router = psutil.Process(server.pid)
    rss_start = router.memory_info().rss
    tally, stop = Tally(), threading.Event()
    threads = ([threading.Thread(target=chat_user, args=(base, tally, stop, i)) for i in range(4)]
               + [threading.Thread(target=f, args=(base, tally, stop)) for f in (bad_requests, cut_connections,
                                                                                   long_prompts)])
    for thread in threads:
        thread.start()
    roles = ["prefill-0", "decode-0"] if mode == "disaggregated" else ["worker-0", "worker-0"]
    for k, name in enumerate(roles, 1):   # a worker of each role, at 1/3 and 2/3 of the run
        time.sleep(seconds / 3)
        pid = httpx.get(f"{base}/events", params={"since_step": 1 << 40}).json()["workers"][name]["pid"]
        with tally.lock:
            tally.kills.append(time.monotonic())
        os.kill(pid, signal.SIGKILL)
        print(f"  {mode}: killed {name} (pid {pid}) at {k * seconds / 3:.0f} s", flush=True)
    time.sleep(seconds / 3)
    stop.set()
    for thread in threads:
        thread.join(300)
    rss_end = router.memory_info().rss
    children = [p.pid for p in router.children(recursive=True)]
    server.send_signal(signal.SIGTERM)
    server.wait(120)
    time.sleep(2)
    alive = [p for p in children if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    after = leftovers()
    outcomes = tally.outcomes
    counts = {k: outcomes[k] for k in ("completed", "clear error", "cut by client", "lost")}
    return {"mode": mode, "seconds": seconds, "sent": sum(outcomes.values()), **counts,
            "healthy failed": len(tally.healthy_failed), "healthy failed examples": tally.healthy_failed[:5],
            "lost examples": tally.lost[:5], "router MB start": round(rss_start / 2 ** 20),
            "router MB end": round(rss_end / 2 ** 20), "processes left": len(alive),
            **{f"{k} left": len(after[k] - before[k]) for k in after}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=180.0, help="per mode")
    p.add_argument("--modes", nargs="+", default=["colocated", "chunked", "disaggregated"])
    a = p.parse_args()
    rows = []
    for mode in a.modes:
        print(f"soak: {mode}, {a.seconds:.0f} s", flush=True)
        rows.append(soak(mode, a.seconds))
        print(json.dumps(rows[-1]), flush=True)
    columns = ["mode", "sent", "completed", "clear error", "cut by client", "lost", "healthy failed",
               "router MB start", "router MB end", "processes left", "shm left", "semaphores left", "kv folders left"]
    machine = f"{platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    lines = [f"# Soak: {a.seconds:.0f} s per mode, a worker of each role killed", "", f"Machine: {machine}.", "",
             "| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    lines += ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "soak.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "soak.json").write_text(json.dumps({"machine": machine, "runs": rows}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
