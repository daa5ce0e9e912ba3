"""What the lab measures: a cluster on this machine, or any OpenAI-compatible server, behind one
protocol. Experiments, the load generator and the dashboard take a Target and never ask which."""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from engine.cluster.records import TransferRecord, WorkerStatus
from engine.cluster.topology import Mode
from engine.core.client_stream import ClientStream
from engine.core.config import SamplingParams


class Target(Protocol):
    note: str   # a caveat for the learner (workers sharing one GPU...), or ""

    def submit(self, prompt, params: SamplingParams) -> ClientStream:
        """Send a request now; the stream stamps each token as it arrives."""

    def count_tokens(self, prompt) -> int:
        """Tokens of a prompt (text or chat messages) as the target counts them."""

    def status(self) -> list[WorkerStatus]:
        """Each worker's state; empty where the target does not tell (a remote server)."""

    def finished_transfers(self) -> list[TransferRecord]:
        """KV transfers that have landed; empty where the target does not tell."""

    def stop(self) -> None:
        """Release what the target holds (worker processes, connections)."""


class TargetKind(StrEnum):
    LOCAL = "local"     # a cluster of worker processes on this machine
    REMOTE = "remote"   # an OpenAI-compatible URL


@dataclass(frozen=True)
class TargetSpec:
    kind: TargetKind = TargetKind.LOCAL
    mode: Mode = Mode.COLOCATED
    prefill_workers: int = 1
    decode_workers: int = 1
    workers: int = 1
    transport: str = "shm"
    chunk_size: int = 256
    conditional_threshold: int | None = 1000
    model: str = "bundled"
    kv_cache_tokens: int = 16384
    url: str = ""

    def __post_init__(self):
        object.__setattr__(self, "kind", TargetKind(self.kind))
        object.__setattr__(self, "mode", Mode(self.mode))

    @property
    def label(self) -> str:
        if self.kind == TargetKind.REMOTE:
            return f"remote {self.url}"
        if self.mode == Mode.DISAGGREGATED:
            return f"disaggregated {self.prefill_workers}P{self.decode_workers}D ({self.transport})"
        return str(self.mode) if self.mode == Mode.COLOCATED else f"chunked ({self.chunk_size})"


def open_target(spec: TargetSpec) -> Target:
    """Start the local cluster (minutes for a first model load) or connect to the URL."""
    # Imported here: the cluster brings torch and transformers, which a remote target never needs.
    if spec.kind == TargetKind.REMOTE:
        from .http_target import HttpTarget
        return HttpTarget(spec.url)
    from engine.cluster.cluster import Cluster
    from engine.cluster.topology import Topology
    from engine.core.config import EngineConfig
    return Cluster(Topology(spec.mode, spec.prefill_workers, spec.decode_workers, spec.workers),
                   EngineConfig(model=spec.model, chunk_size=spec.chunk_size, kv_cache_tokens=spec.kv_cache_tokens),
                   transport=spec.transport, conditional_threshold=spec.conditional_threshold)
