"""The live lab behind the dashboard: one target (a local cluster or a remote URL), the load
running against it, server-side samples, and recorded runs saved as files. Streamlit-free: the
page only calls these methods, and nothing here runs in Streamlit's script thread.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd

from engine.config import EngineConfig
from engine.metrics import SLO

from .interference import RunResult, collect_result, relative_injections, save_result
from .load_generator import ChatLoad, LoadGenerator

SAMPLE_EVERY_S = 0.5


@dataclass(frozen=True)
class TargetSpec:
    kind: str = "local"             # local | remote
    mode: str = "colocated"         # colocated | chunked | disaggregated
    prefill_workers: int = 1
    decode_workers: int = 1
    workers: int = 1
    transport: str = "shm"
    chunk_size: int = 256
    conditional_threshold: int | None = 1000
    model: str = "bundled"
    kv_cache_tokens: int = 16384
    url: str = ""

    @property
    def label(self) -> str:
        if self.kind == "remote":
            return f"remote {self.url}"
        if self.mode == "disaggregated":
            return f"disaggregated {self.prefill_workers}P{self.decode_workers}D ({self.transport})"
        return self.mode if self.mode == "colocated" else f"chunked ({self.chunk_size})"


class LiveLab:
    def __init__(self, runs_dir: str | Path = "runs"):
        self.runs_dir = Path(runs_dir)
        self.spec: TargetSpec | None = None
        self.target = None
        self.status = "idle"            # idle | starting | ready | failed
        self.error: str | None = None
        self.generator: LoadGenerator | None = None
        self.samples: list[dict] = []
        self.slo = SLO(ttft=1.0, tpot=0.15)
        self._lock = threading.RLock()
        self._sampler_stop = threading.Event()

    # ---- target ---------------------------------------------------------------------------------

    def start_target(self, spec: TargetSpec) -> None:
        """Start in the background: the page polls `status`."""
        with self._lock:
            if self.status == "starting":
                return
            self.stop_target()
            self.spec, self.status, self.error = spec, "starting", None
        threading.Thread(target=self._start, args=(spec,), daemon=True, name="lab-start").start()

    def _start(self, spec: TargetSpec) -> None:
        try:
            if spec.kind == "remote":
                from .http_target import HttpTarget
                target = HttpTarget(spec.url)
            else:
                from engine.cluster import Cluster
                from engine.topology import Topology
                target = Cluster(Topology(spec.mode, spec.prefill_workers, spec.decode_workers, spec.workers),
                                 EngineConfig(model=spec.model, chunk_size=spec.chunk_size,
                                              kv_cache_tokens=spec.kv_cache_tokens),
                                 transport=spec.transport, conditional_threshold=spec.conditional_threshold)
                target.count_tokens = lambda messages: len(target.prompts.encode(messages))
        except Exception as exc:  # shown to the learner as is: it says what is wrong
            with self._lock:
                self.status, self.error = "failed", f"{type(exc).__name__}: {exc}"
            return
        with self._lock:
            if self.spec != spec or self.status != "starting":  # stopped or replaced meanwhile
                _close(target)
                return
            self.target, self.status = target, "ready"
            self.samples = []
            self._sampler_stop = threading.Event()
        threading.Thread(target=self._sample, args=(target, self._sampler_stop), daemon=True).start()

    def stop_target(self) -> None:
        with self._lock:
            self.stop_load()
            self._sampler_stop.set()
            target, self.target = self.target, None
            self.status = "idle"
        if target is not None:
            _close(target)

    def workers(self) -> dict:
        target = self.target
        return target.snapshot() if target is not None and hasattr(target, "snapshot") else {}

    def _sample(self, target, stop: threading.Event) -> None:
        """Server-side state over time (local engine only): queue, batch, KV use per worker."""
        while not stop.wait(SAMPLE_EVERY_S):
            now = time.perf_counter()
            rows = [{"t": now, "worker": name, "running": w["running"], "waiting": w["waiting"],
                     "kv_used": w["kv_blocks_used"] / w["kv_blocks_total"] if w["kv_blocks_total"] else 0.0}
                    for name, w in target.snapshot().items()]
            with self._lock:
                self.samples.extend(rows)
                del self.samples[:-20000]

    # ---- load -----------------------------------------------------------------------------------

    def start_load(self, load: ChatLoad) -> None:
        with self._lock:
            if self.target is None:
                raise RuntimeError("start a target first")
            self.stop_load()
            self.generator = LoadGenerator(self.target, load).start()

    def stop_load(self) -> None:
        with self._lock:
            generator = self.generator
        if generator is not None:
            generator.stop()

    def inject(self, prompt_tokens: int, text: str | None = None) -> None:
        with self._lock:
            if self.generator is None:
                raise RuntimeError("start the load first, then inject a long prompt into it")
            generator = self.generator
        threading.Thread(target=generator.inject, args=(prompt_tokens, text or None), daemon=True).start()

    @property
    def load_running(self) -> bool:
        return self.generator is not None and self.generator.running

    # ---- what the charts read -------------------------------------------------------------------------

    def current(self) -> RunResult | None:
        if self.generator is None or not self.generator.started:
            return None
        return collect_result(self.generator, self.spec.label if self.spec else "", self.target, self.slo)

    def server_samples(self) -> pd.DataFrame:
        with self._lock:
            frame = pd.DataFrame(self.samples, columns=["t", "worker", "running", "waiting", "kv_used"])
        if self.generator is not None and self.generator.started:
            frame["t"] = frame["t"] - self.generator.started
        return frame

    # ---- recorded runs ----------------------------------------------------------------------------------

    def record(self, name: str = "") -> Path | None:
        result = self.current()
        if result is None:
            return None
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        folder = self.runs_dir / f"{stamp}-{_slug(name or result.label)}"
        return save_result(result, folder, {"name": name or result.label,
                                            "target": asdict(self.spec) if self.spec else None,
                                            "injections": relative_injections(result)})

    def saved_runs(self) -> list[str]:
        if not self.runs_dir.exists():
            return []
        return sorted((p.name for p in self.runs_dir.iterdir() if (p / "summary.json").exists()), reverse=True)

    def load_run(self, name: str) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
        folder = self.runs_dir / name
        return (pd.read_csv(folder / "tokens.csv"), pd.read_csv(folder / "requests.csv"),
                json.loads((folder / "summary.json").read_text()))


def _close(target) -> None:
    for method in ("stop", "close"):
        if hasattr(target, method):
            getattr(target, method)()
            return


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:60] or "run"
