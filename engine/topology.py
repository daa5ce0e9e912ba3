"""Where each worker runs: modes, xPyD splits, and the device (GPU or CPU cores) of each worker."""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .config import EngineConfig
from .devices import available_cores
from .worker import WorkerSpec

MODES = ("colocated", "chunked", "disaggregated")


@dataclass(frozen=True)
class Topology:
    mode: str = "colocated"
    prefill_workers: int = 1     # disaggregated only
    decode_workers: int = 1      # disaggregated only
    workers: int = 1             # colocated / chunked
    device: str = "auto"         # auto | cpu | cuda

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.mode == "disaggregated":
            if self.prefill_workers < 1 or self.decode_workers < 1:
                raise ValueError(f"disaggregated mode needs at least 1 prefill and 1 decode worker, got "
                                 f"{self.prefill_workers}P{self.decode_workers}D")
        elif self.workers < 1:
            raise ValueError(f"{self.mode} mode needs at least 1 worker, got {self.workers}")

    @property
    def roles(self) -> list[tuple[str, str]]:
        if self.mode == "disaggregated":
            return ([(f"prefill-{i}", "prefill") for i in range(self.prefill_workers)]
                    + [(f"decode-{i}", "decode") for i in range(self.decode_workers)])
        return [(f"worker-{i}", "colocated") for i in range(self.workers)]

    @property
    def label(self) -> str:
        if self.mode == "disaggregated":
            return f"disaggregated {self.prefill_workers}P{self.decode_workers}D"
        return f"{self.mode} x{self.workers}"


def plan_workers(topology: Topology, base: EngineConfig, transport: str = "shm", disk_folder: str | None = None,
                 fsync: bool = False, cores: list[int] | None = None,
                 decode_chunk_size: int = 32) -> tuple[list[WorkerSpec], str]:
    """One spec per worker, each with its own device; and a note on how isolated they are."""
    roles = topology.roles
    if decode_chunk_size < 1:
        raise ValueError(f"decode_chunk_size must be a positive number of tokens, got {decode_chunk_size}")

    def role_config(role: str, **placement) -> EngineConfig:
        if role == "decode":
            # A decode worker may still prefill short prompts (conditional disaggregation): a small
            # chunk budget lets them ride along with decode steps instead of stalling the streams.
            return replace(base, policy="chunked", chunk_size=decode_chunk_size, **placement)
        return replace(base, policy="chunked" if topology.mode == "chunked" else "prefill-first", **placement)

    use_cuda = topology.device == "cuda" or (topology.device == "auto" and torch.cuda.is_available())
    specs, note = [], ""
    if use_cuda:
        gpus = torch.cuda.device_count()
        for i, (name, role) in enumerate(roles):
            engine = role_config(role, device=f"cuda:{i % gpus}", cpu_cores=None, threads=None)
            specs.append(WorkerSpec(name, role, engine, transport, disk_folder, fsync))
        if len(roles) > gpus:
            note = (f"{len(roles)} workers share {gpus} GPU(s): prefill and decode compete for the same "
                    "compute, so isolation is only partial")
        return specs, note
    cores = cores or available_cores()
    if len(roles) > len(cores):
        raise ValueError(f"{topology.label} needs {len(roles)} workers but only {len(cores)} CPU core(s) are "
                         f"available ({cores}); each worker needs at least one core")
    share = len(cores) // len(roles)
    for i, (name, role) in enumerate(roles):
        mine = tuple(cores[i * share:(i + 1) * share])
        engine = role_config(role, device="cpu", cpu_cores=mine, threads=len(mine))
        specs.append(WorkerSpec(name, role, engine, transport, disk_folder, fsync))
    return specs, note
