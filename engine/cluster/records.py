"""What the cluster tells dashboards, the server and tests: each worker's status, each KV transfer."""
from __future__ import annotations

from dataclasses import dataclass

from .messages import WorkerLoad
from .topology import Role


@dataclass(frozen=True)
class WorkerStatus:
    name: str
    role: Role
    pid: int                     # its process (the current one, after a restart)
    alive: bool
    device: str                  # "cpu", "cuda:0", ...
    detail: str                  # threads and cores, or the GPU's name
    load: WorkerLoad
    outstanding: int             # requests the router has placed on it and not seen end
    restarts: int = 0            # times it died and was started again
    last_error: str = ""         # why it last died
    cores: tuple[int, ...] = ()  # the CPU cores it is pinned to (none on a GPU)

    @property
    def state(self) -> str:
        """What a person needs to know: serving, or down (and why)."""
        if self.alive:
            return "serving" if not self.restarts else f"serving (restarted {self.restarts}x after: {self.last_error})"
        return f"down ({self.last_error}), restarting" if self.last_error else "starting"


@dataclass
class TransferRecord:
    request_id: str
    transport: str
    source: str
    target: str
    nbytes: int
    tokens: int
    send_started: float
    send_seconds: float
    copies: int                  # copies of the KV bytes between the two pools on this route
    receive_seconds: float = 0.0
    finished_at: float = 0.0     # 0 until the decode worker has loaded the KV
    during_prefill: bool = False   # written layer by layer while the prompt computed (push): the times
                                   # below are then only what was left after the prefill ended
    writing_seconds: float = 0.0   # a push's writes inside the prefill (shm's copies; NIXL's run on their own)

    @property
    def total_seconds(self) -> float:
        """From the end of the prefill (the hand-off) to the KV usable on the decode side."""
        return self.finished_at - self.send_started

    @property
    def moving_seconds(self) -> float:
        """The time the bytes were seen moving: a push's timed copies and what followed the prefill (for
        an untimed push, NIXL's, only what followed it)."""
        return self.writing_seconds + self.total_seconds

    @property
    def gbps(self) -> float:
        return self.nbytes / self.moving_seconds / 1e9 if self.moving_seconds > 0 else float("nan")
