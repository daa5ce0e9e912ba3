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
        self.run_label: str = ""            # the target the current run's load ran against
        self.stopped_at: float | None = None  # when the current run's load was stopped (perf_counter)
        # What the lab did on its own that the learner should be told: (text key, its values); the page
        # shows it until the next load starts.
        self.notice: tuple[str, dict] | None = None
        self._lock = threading.RLock()
        self._sampler_stop = threading.Event()

    # ---- target ---------------------------------------------------------------------------------

    def start_target(self, spec: TargetSpec) -> None:
        """Start in the background: the page polls `status`."""
        with self._lock:
            if self.status == LabStatus.STARTING:
                return
            had_load, had_run, old = self.load_running, self.generator is not None, self.run_label
            users = self.generator.load.users if self.generator is not None else 0
            self.stop_target(tell=False)
            # A new target starts a new run: the old run's charts would stand under the new workers' names.
            self.generator, self.samples, self.stopped_at, self.run_label = None, [], None, ""
            if had_load:
                self.notice = ("notice_load_stopped_for_target", {"users": users, "old": old, "new": spec.label})
            elif had_run:
                self.notice = ("notice_run_cleared_for_target", {"old": old, "new": spec.label})
            else:
                self.notice = None
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

    def stop_target(self, tell: bool = True) -> None:
        with self._lock:
            if tell and self.load_running:
                self.notice = ("notice_load_stopped_with_target", {"users": self.generator.load.users,
                                                                   "old": self.run_label})
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
            self.run_label = self.spec.label if self.spec else ""
            self.stopped_at, self.notice = None, None

    def stop_load(self) -> None:
        with self._lock:
            generator = self.generator
            if generator is not None and generator.running and self.stopped_at is None:
                self.stopped_at = time.perf_counter()   # the run's charts end here, not at the wall clock
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

    def view_end(self, result: RunResult) -> float:
        """Where the current run's charts end, in seconds since it started: now while its load runs; once
        it stopped, when it was stopped (or its last token, when it ended on its own), so that every
        chart shows the same last stretch of the run instead of windows sliding past it into nothing."""
        if self.load_running:
            return time.perf_counter() - result.started
        if self.stopped_at is not None:
            return self.stopped_at - result.started
        last = [t for sent in result.requests for t in sent.stream.token_times[-1:]]
        return max(last, default=result.started) - result.started

    def server_samples(self) -> pd.DataFrame:
        with self._lock:
            frame = pd.DataFrame(self.samples, columns=["t", "worker", "running", "waiting", "kv_used"])
        if self.generator is not None and self.generator.started:
            frame["t"] = frame["t"] - self.generator.started
        return frame

    def timeline(self, result: RunResult, window_s: float = TIMELINE_WINDOW_S,
                 end_s: float | None = None) -> list[dict]:
        """The engine timeline's bars of the `window_s` seconds before `end_s` (seconds since the run
        started; now by default), in seconds since the run started. Read from the target the run's load
        ran against, stopped or not. Only a local cluster reports its steps here; a remote server's clock
        is not this machine's."""
        target = self.generator.target if self.generator is not None else self.target
        if not isinstance(target, Cluster):
            return []
        now = time.perf_counter() if end_s is None else result.started + end_s
        longs = {s.stream.request_id for s in result.requests if s.kind == RequestKind.LONG}
        since = now - window_s   # a step that ended in the window is drawn, however long ago it began
        steps = [s for s in target.steps if s.start + s.duration >= since and s.start <= now]
        transfers = [t for t in list(target.transfers.values()) if (t.finished_at or now) >= since]
        return timeline_bars(steps, transfers, result.started, now, longs)

    def record(self, name: str = "") -> Path | None:
        """Save the current run in the run store; None if nothing ran yet."""
        result = self.current()
        if result is None:
            return None
        return self.runs.save(result, name, asdict(self.spec) if self.spec else None)
