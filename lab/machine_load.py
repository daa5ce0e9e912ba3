"""Was the machine quiet during a run? CPU time spent outside the lab, measured, not guessed.

A lesson's numbers only teach if the engine had the cores to itself: a browser build, a video call
or a second run in another tab takes cores and makes every step slower, which reads as the effect
under study. So each experiment measures how much CPU other processes used while it ran.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import psutil

BUSY_CORES = 0.25   # other processes using more than a quarter of a core on average: a busy machine


@dataclass(frozen=True)
class MachineLoad:
    cores: int                 # logical CPUs of the machine
    other_cores: float         # average cores' worth of CPU used by processes outside the lab

    @property
    def busy(self) -> bool:
        return self.other_cores > BUSY_CORES


class CpuWatch:
    """CPU time of the whole machine minus that of this process and the given worker processes."""

    def __init__(self, pids: list[int]):
        self.processes = [psutil.Process(os.getpid())] + [p for p in map(_process, pids) if p]
        self.started = time.perf_counter()
        self.machine_busy = _machine_busy_seconds()
        self.own = {p.pid: _cpu_seconds(p) for p in self.processes}

    def stop(self) -> MachineLoad:
        wall = time.perf_counter() - self.started
        machine = _machine_busy_seconds() - self.machine_busy
        own = sum(max(0.0, _cpu_seconds(p) - before) for p, before in zip(self.processes, self.own.values()))
        return MachineLoad(psutil.cpu_count() or 1, max(0.0, machine - own) / wall if wall > 0 else 0.0)


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def _cpu_seconds(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.NoSuchProcess:   # a worker that ended: its time is lost with it, so count none of it
        return 0.0
    return times.user + times.system


def _machine_busy_seconds() -> float:
    times = psutil.cpu_times()
    return times.user + times.system + getattr(times, "nice", 0.0) + getattr(times, "irq", 0.0) \
        + getattr(times, "softirq", 0.0)
