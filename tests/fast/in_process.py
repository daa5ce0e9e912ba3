"""A cluster in one process: the real Router and real Workers (each with the tiny model), over a real
transport, with the test deciding when each worker steps. Every message between them is the one a
process cluster would pickle; only the processes are missing."""
from __future__ import annotations

import os
import queue
import time
from dataclasses import dataclass

from engine.cluster.messages import Ready, WorkerFailed
from engine.cluster.placement import WorkerSpec
from engine.cluster.prefix_affinity import PrefixAffinity
from engine.cluster.router import Router
from engine.cluster.topology import Mode, Role, Topology
from engine.cluster.transports import TransportSettings
from engine.cluster.worker import Worker
from engine.core.config import EngineConfig, SamplingParams
from engine.core.request_stream import RequestStream
from tests.fast.tiny_model import tiny_engine
from tests.helpers import Collected


@dataclass
class _Process:
    pid: int


@dataclass
class Member:
    """What the router knows of one worker (a WorkerProcess's fields), and the worker itself."""
    spec: WorkerSpec
    inbox: queue.Queue
    worker: Worker
    process: _Process
    alive: bool = True
    device: str = ""
    detail: str = ""
    restarts: int = 0
    last_error: str = ""
    restart_at: float | None = None


class InProcessPool:
    """WorkerPool's interface, over Worker objects in this process."""

    def __init__(self, specs: list[WorkerSpec]):
        self.workers: dict[str, Member] = {}
        for spec in specs:
            inbox = queue.Queue()
            engine = tiny_engine(spec.engine, spec.name)
            self.workers[spec.name] = Member(spec, inbox, Worker(spec, inbox, Collected(), engine=engine),
                                             _Process(os.getpid()))

    def live(self, role=None) -> list[Member]:
        return [m for m in self.workers.values() if m.alive and (role is None or m.spec.role == role)]

    def send(self, name: str, message) -> None:
        self.workers[name].inbox.put(message)

    def ready(self, message: Ready) -> None:
        member = self.workers[message.worker]
        member.device, member.detail, member.alive = message.device, message.detail, True

    def died(self, name: str, error: str) -> None:
        member = self.workers[name]
        member.alive, member.last_error, member.restart_at = False, error, float("inf")   # never restarted here


class InProcessCluster:
    def __init__(self, topology: Topology, transport: str | TransportSettings = "shm",
                 conditional_threshold: int | None = None, kv_cache_tokens: int = 512, cache_aware: bool = False,
                 prefix_cache_tokens: int = 0):
        settings = transport if isinstance(transport, TransportSettings) else TransportSettings(transport)
        if topology.mode == Mode.DISAGGREGATED:
            roles = [(f"prefill-{i}", Role.PREFILL) for i in range(topology.prefill_workers)] + \
                    [(f"decode-{i}", Role.DECODE) for i in range(topology.decode_workers)]
        else:
            roles = [(f"worker-{i}", Role.COLOCATED) for i in range(topology.workers)]
        specs = [WorkerSpec(name, role, EngineConfig(kv_cache_tokens=kv_cache_tokens, policy=topology.policy(role),
                                                     prefix_cache_tokens=prefix_cache_tokens), settings)
                 for name, role in roles]
        self.pool = InProcessPool(specs)
        self.router = Router(self.pool, topology, settings, conditional_threshold,
                             PrefixAffinity(16) if cache_aware else None)
        self.phases: dict[str, list[str]] = {}   # each request's phases, in the order the router had them
        self._ids = 0
        self.pump()   # their Ready messages

    def worker(self, name: str) -> Worker:
        return self.pool.workers[name].worker

    @property
    def workers(self) -> list[Worker]:
        return [m.worker for m in self.pool.workers.values()]

    def submit(self, prompt_ids: list[int], max_tokens: int = 6) -> RequestStream:
        self._ids += 1
        stream = RequestStream(f"req-{self._ids}", 0.0, self.router.abort, len(prompt_ids))
        self.router.add(stream, prompt_ids, SamplingParams(max_tokens=max_tokens, ignore_eos=True))
        self._note_phases()
        return stream

    def pump(self, steps: int = 1, only: list[str] | None = None) -> None:
        """Step each live worker (or those named) `steps` times, handing what each sends to the router."""
        for _ in range(steps):
            for name, member in self.pool.workers.items():
                if member.alive and (only is None or name in only):
                    member.worker.step()
                self._deliver(member)

    def _deliver(self, member: Member) -> None:
        outbox = member.worker.outbox
        messages, outbox.messages = outbox.messages, []
        for message in messages:
            self.router.handle(message)
            self._note_phases()

    def _note_phases(self) -> None:
        for request_id, state in self.router.live.items():
            seen = self.phases.setdefault(request_id, [])
            if not seen or seen[-1] != state.phase:
                seen.append(str(state.phase))

    def run(self, *streams: RequestStream, seconds: float = 10.0) -> None:
        """Step until every stream ended (or fail): a transfer on its own thread (tcp) takes some time."""
        deadline = time.monotonic() + seconds
        while not all(s.done for s in streams):
            if time.monotonic() > deadline:
                raise AssertionError(f"not done in {seconds} s: {[s.request_id for s in streams if not s.done]}")
            self.pump()

    def kill(self, name: str) -> None:
        """The worker process died: what the pool reports when its pipe reads EOF."""
        self.router.handle(WorkerFailed(name, "exited (exit code -9)"))

    def blocks_held(self) -> dict[str, int]:
        return {w.spec.name: w.engine.kv_blocks_used for w in self.workers}

    def close(self) -> None:
        for worker in self.workers:
            worker.transport.close()
