"""Where each worker of a topology runs: a GPU each, or a share of the CPU cores."""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..core.config import EngineConfig
from ..core.devices import available_cores
from .topology import Role, Topology
from .transports import TransportSettings


@dataclass(frozen=True)
class WorkerSpec:
    """What one worker process is started with."""
    name: str
    role: Role
    engine: EngineConfig
    transport: TransportSettings


def plan_workers(topology: Topology, base: EngineConfig, transport: TransportSettings,
                 cores: list[int] | None = None, decode_chunk_size: int = 32) -> tuple[list[WorkerSpec], str]:
    """One spec per worker, each with its own device; and a note on how isolated they are."""
    roles = topology.roles
    if decode_chunk_size < 1:
        raise ValueError(f"decode_chunk_size must be a positive number of tokens, got {decode_chunk_size}")

    def spec(name: str, role: Role, **placement) -> WorkerSpec:
        policy = topology.policy(role)
        chunk = {"chunk_size": decode_chunk_size} if role == Role.DECODE else {}
        # A prefill worker hands each request off after its first token: it has no decode steps to compile.
        compile_decode = base.compile_decode and role != Role.PREFILL
        return WorkerSpec(name, role, replace(base, policy=policy, compile_decode=compile_decode, **chunk,
                                              **placement), transport)

    use_cuda = topology.device == "cuda" or (topology.device == "auto" and torch.cuda.is_available())
    if use_cuda:
        gpus = torch.cuda.device_count()
        specs = [spec(name, role, device=f"cuda:{i % gpus}", cpu_cores=None, threads=None)
                 for i, (name, role) in enumerate(roles)]
        note = (f"{len(roles)} workers share {gpus} GPU(s): prefill and decode compete for the same compute, "
                "so isolation is only partial") if len(roles) > gpus else ""
        return specs, note
    cores = cores or available_cores()
    if len(roles) > len(cores):
        raise ValueError(f"{topology.label} needs {len(roles)} workers but only {len(cores)} CPU core(s) are "
                         f"available ({cores}); each worker needs at least one core")
    share = len(cores) // len(roles)
    specs = []
    for i, (name, role) in enumerate(roles):
        mine = tuple(cores[i * share:(i + 1) * share])
        specs.append(spec(name, role, device="cpu", cpu_cores=mine, threads=len(mine)))
    return specs, ""
