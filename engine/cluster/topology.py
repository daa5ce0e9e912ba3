"""The serving modes, the roles workers play in them, and the workers a topology asks for.

Torch-free on purpose: the lab's pages and the planner name modes without loading an engine.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ..core.config import Policy


class Mode(StrEnum):
    COLOCATED = "colocated"           # each worker prefills and decodes, prompts first
    CHUNKED = "chunked"               # colocated, with a per-step token budget (Sarathi-Serve)
    DISAGGREGATED = "disaggregated"   # xPyD: prefill workers hand each prompt's KV to decode workers


class Role(StrEnum):
    COLOCATED = "colocated"   # prefills and decodes its own requests
    PREFILL = "prefill"       # computes a prompt's KV and first token, then hands the KV off
    DECODE = "decode"         # imports handed-off KV and streams the rest (and prefills short prompts)


@dataclass(frozen=True)
class Topology:
    mode: Mode = Mode.COLOCATED
    prefill_workers: int = 1     # disaggregated only
    decode_workers: int = 1      # disaggregated only
    workers: int = 1             # colocated / chunked
    device: str = "auto"         # auto | cpu | cuda

    def __post_init__(self):
        if self.mode not in set(Mode):
            raise ValueError(f"mode must be one of {[m.value for m in Mode]}, got {self.mode!r}")
        object.__setattr__(self, "mode", Mode(self.mode))
        if self.mode == Mode.DISAGGREGATED:
            if self.prefill_workers < 1 or self.decode_workers < 1:
                raise ValueError(f"disaggregated mode needs at least 1 prefill and 1 decode worker, got "
                                 f"{self.prefill_workers}P{self.decode_workers}D")
        elif self.workers < 1:
            raise ValueError(f"{self.mode} mode needs at least 1 worker, got {self.workers}")

    @property
    def roles(self) -> list[tuple[str, Role]]:
        """(worker name, role) for every worker."""
        if self.mode == Mode.DISAGGREGATED:
            return ([(f"prefill-{i}", Role.PREFILL) for i in range(self.prefill_workers)]
                    + [(f"decode-{i}", Role.DECODE) for i in range(self.decode_workers)])
        return [(f"worker-{i}", Role.COLOCATED) for i in range(self.workers)]

    def policy(self, role: Role) -> Policy:
        # A decode worker may still prefill short prompts (conditional disaggregation): chunked, so they
        # ride along with decode steps instead of stalling the streams.
        if role == Role.DECODE or self.mode == Mode.CHUNKED:
            return Policy.CHUNKED
        return Policy.PREFILL_FIRST

    @property
    def label(self) -> str:
        if self.mode == Mode.DISAGGREGATED:
            return f"disaggregated {self.prefill_workers}P{self.decode_workers}D"
        return f"{self.mode} x{self.workers}"

