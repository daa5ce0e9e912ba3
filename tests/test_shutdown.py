"""However the server ends (SIGTERM, SIGHUP, SIGINT, or killed outright), its worker processes, the
multiprocessing resource tracker, shared-memory segments and KV files go with it."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from engine.cluster import shutdown
from engine.cluster.shutdown import exit_on_signals
from benchmarks.reference_tools import free_port
from tests.helpers import kv_leftovers

ROOT = Path(__file__).resolve().parents[1]


def semaphores() -> set[str]:
    """multiprocessing's named semaphores (its queues' locks); the resource tracker removes them."""
    return {p.name for p in Path("/dev/shm").glob("sem.mp-*")}


def start_server(mode: str, transport: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--mode", mode, "--transport", transport,
                               "--port", str(port), "--kv-cache-tokens", "4096"], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return server, base
        except httpx.HTTPError:
            pass
        assert server.poll() is None, "the server exited while starting"
        time.sleep(0.5)
    server.kill()
    raise AssertionError("the server did not come up")


def stream_forever(base: str, received: list) -> None:
    body = {"prompt": "Tell me a long story.", "max_tokens": 2000, "ignore_eos": True, "stream": True}
    try:
        with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=120) as response:
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    received.append(json.loads(line[6:]))
    except httpx.HTTPError:
        pass  # cut by the shutdown


def gone(pids: list[int], within: float) -> list[int]:
    """The pids still running (not zombies) after up to `within` seconds."""
    deadline = time.time() + within
    while True:
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        if not alive or time.time() > deadline:
            return alive
        time.sleep(0.2)


@pytest.mark.parametrize("mode,transport,sig", [
    ("disaggregated", "shm", signal.SIGTERM),    # the signal every process manager sends
    ("disaggregated", "disk", signal.SIGKILL),   # no handler runs: the workers must notice by themselves
])
def test_the_server_leaves_nothing_behind(mode, transport, sig):
    kv_before, semaphores_before = kv_leftovers(), semaphores()
    server, base = start_server(mode, transport)
    children = [p.pid for p in psutil.Process(server.pid).children(recursive=True)]
    assert len(children) >= (2 if mode == "colocated" else 3)   # the workers and the resource tracker
    received: list = []
    streams = [threading.Thread(target=stream_forever, args=(base, received), daemon=True) for _ in range(2)]
    for thread in streams:
        thread.start()
    deadline = time.time() + 120
    while len(received) < 6 and time.time() < deadline:
        time.sleep(0.1)
    assert len(received) >= 6, "both streams are running when the signal comes"
    server.send_signal(sig)
    if sig != signal.SIGKILL:
        server.wait(60)   # bounded, although two streams were open
    else:
        server.wait(10)
    assert gone(children, within=45) == []
    assert kv_leftovers() <= kv_before   # shared-memory segments and private KV folders
    assert semaphores() <= semaphores_before


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_every_ending_signal_unwinds_the_with_blocks_that_stop_a_cluster(sig):
    # The server path above, for the signals it does not send: each becomes SystemExit, so a
    # `with Cluster(...)` block exits and stops its workers.
    stopped = []
    with pytest.raises(SystemExit) as exit_:
        with exit_on_signals():
            try:
                os.kill(os.getpid(), sig)
                time.sleep(5)   # the handler runs at the next bytecode; never reached
            finally:
                stopped.append(True)
    assert stopped and exit_.value.code == 128 + sig
    assert signal.getsignal(sig) is not shutdown._exit   # the previous handlers are back
