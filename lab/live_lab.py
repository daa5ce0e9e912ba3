"""The live lab behind the dashboard: one target (a local cluster or a remote URL), the load
running against it, and server-side samples. Streamlit-free: the page only calls these methods,
and nothing here runs in Streamlit's script thread.
"""
from __future__ import annotations

import threading
import time
from dataclasses import asdict
from enum import StrEnum
from pathlib import Path

import pandas as pd

from engine.cluster.cluster import Cluster
from engine.cluster.records import WorkerStatus
from engine.metrics import SLO

from .engine_trace import timeline_bars
from .interference import RunResult, collect_result
from .load_generator import ChatLoad, LoadGenerator, RequestKind
from .run_store import RunStore
from .target import Target, TargetSpec, open_target

SAMPLE_EVERY_S = 0.5
TIMELINE_WINDOW_S = 20.0   # the dashboard's engine timeline shows this much of the recent past


class LabStatus(StrEnum):
    IDLE = "idle"           # no target
    STARTING = "starting"   # a target is being started in the background
    READY = "ready"
    FAILED = "failed"       # the start failed; `error` says why


class LiveLab:
    def __init__(self, runs_dir: str | Path = "runs"):
        self.runs = RunStore(runs_dir)
        self.spec: TargetSpec | None = None
        self.target: Target | None = None
        self.status = LabStatus.IDLE
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
            if self.status == LabStatus.STARTING:
                return
            self.stop_target()
            self.spec, self.status, self.error = spec, LabStatus.STARTING, None
        threading.Thread(target=self._start, args=(spec,), daemon=True, name="lab-start").start()

    def _start(self, spec: TargetSpec) -> None:
        try:
            target = open_target(spec)
        except Exception as exc:  # shown to the learner as is: it says what is wrong
            with self._lock:
                self.status, self.error = LabStatus.FAILED, f"{type(exc).__name__}: {exc}"
            return
        with self._lock:
            if self.spec != spec or self.status != LabStatus.STARTING:  # stopped or replaced meanwhile
                target.stop()
                return
            self.target, self.status = target, LabStatus.READY
            self.samples = []
            self._sampler_stop = threading.Event()
        threading.Thread(target=self._sample, args=(target, self._sampler_stop), daemon=True).start()

    def stop_target(self) -> None:
        with self._lock:
            self.stop_load()
            self._sampler_stop.set()
            target, self.target = self.target, None
            self.status = LabStatus.IDLE
        if target is not None:
            target.stop()

    def workers(self) -> list[WorkerStatus]:
        target = self.target
        return target.status() if target is not None else []

    def _sample(self, target: Target, stop: threading.Event) -> None:
        """Server-side state over time (local engine only): queue, batch, KV use per worker."""
        while not stop.wait(SAMPLE_EVERY_S):
            now = time.perf_counter()
            rows = [{"t": now, "worker": w.name, "running": w.load.running, "waiting": w.load.waiting,
                     "kv_used": w.load.kv_usage} for w in target.status()]
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
        return collect_result(self.generator, self.spec.label if self.spec else "", self.slo)

    def server_samples(self) -> pd.DataFrame:
        with self._lock:
            frame = pd.DataFrame(self.samples, columns=["t", "worker", "running", "waiting", "kv_used"])
        if self.generator is not None and self.generator.started:
            frame["t"] = frame["t"] - self.generator.started
        return frame

    def timeline(self, result: RunResult, window_s: float = TIMELINE_WINDOW_S) -> list[dict]:
        """The engine timeline's bars of the last `window_s` seconds, in seconds since the run started.
        Only a local cluster reports its steps here; a remote server's clock is not this machine's."""
        target = self.target
        if not isinstance(target, Cluster):
            return []
        now = time.perf_counter()
        longs = {s.stream.request_id for s in result.requests if s.kind == RequestKind.LONG}
        since = now - window_s   # a step that ended in the window is drawn, however long ago it began
        steps = [s for s in target.steps if s.start + s.duration >= since]
        transfers = [t for t in list(target.transfers.values()) if (t.finished_at or now) >= since]
        return timeline_bars(steps, transfers, result.started, now, longs)

    def record(self, name: str = "") -> Path | None:
        """Save the current run in the run store; None if nothing ran yet."""
        result = self.current()
        if result is None:
            return None
        return self.runs.save(result, name, asdict(self.spec) if self.spec else None)
