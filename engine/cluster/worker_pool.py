"""The worker processes: started per spec, each with an inbox queue and its own pipe back; a worker
whose pipe reads EOF has died, and is started again after a back-off (1 s, 2 s, 4 s... up to a
minute). The pool knows processes, not requests (that is the router's part)."""
from __future__ import annotations

import logging
import multiprocessing as mp
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

from .messages import Ready, Shutdown, WorkerFailed
from .placement import WorkerSpec
from .worker import worker_main

START_TIMEOUT_S = 600
MAX_RESTART_DELAY_S = 60.0
log = logging.getLogger("pdlab.cluster")

# Workers fork from multiprocessing's fork server, a process that has imported torch, transformers and
# the engine once and never runs an operator: a fresh interpreter per worker ("spawn") spent about 6 s of
# a 2-core machine on those imports at every start (benchmarks/worker_start.py). Forking the owner itself
# would copy its torch thread pools, and a GPU owner's CUDA state, in a broken state. The fork server
# ends after its owner and its workers.
WORKERS = mp.get_context("forkserver")
WORKERS.set_forkserver_preload([worker_main.__module__])


class ClusterError(RuntimeError):
    pass


@dataclass
class WorkerProcess:
    spec: WorkerSpec
    process: mp.Process
    inbox: mp.Queue
    conn: Connection
    device: str = ""
    detail: str = ""
    alive: bool = False          # ready and serving; False while it starts, and once it died
    restarts: int = 0
    last_error: str = ""         # why it last died
    restart_at: float | None = None   # monotonic time of the next start, while it is down


class WorkerPool:
    def __init__(self, specs: list[WorkerSpec]):
        self.workers = {spec.name: self._start(spec) for spec in specs}
        self.closing = False
        try:
            self._wait_ready()
        except BaseException:
            self.kill_all()
            raise

    @staticmethod
    def _start(spec: WorkerSpec) -> WorkerProcess:
        inbox = WORKERS.Queue()
        receiver, sender = WORKERS.Pipe(duplex=False)
        process = WORKERS.Process(target=worker_main, args=(spec, inbox, sender), name=spec.name, daemon=True)
        process.start()
        sender.close()  # the worker holds the only sending end: its death reads as EOF here
        return WorkerProcess(spec, process, inbox, receiver)

    def _wait_ready(self) -> None:
        pending = set(self.workers)
        deadline = time.monotonic() + START_TIMEOUT_S
        while pending:
            for message in self.receive(timeout=1.0):
                if isinstance(message, Ready):
                    self.ready(message)
                    pending.discard(message.worker)
                elif isinstance(message, WorkerFailed):
                    raise ClusterError(f"worker {message.worker} failed to start:\n{message.error}")
            if time.monotonic() > deadline:
                raise ClusterError(f"workers {sorted(pending)} not ready after {START_TIMEOUT_S} s")

    def ready(self, message: Ready) -> None:
        worker = self.workers[message.worker]
        worker.device, worker.detail, worker.alive = message.device, message.detail, True
        if worker.restarts:
            log.warning("worker %s is serving again (restart %d)", worker.spec.name, worker.restarts)

    def died(self, name: str, error: str) -> None:
        """Mark a worker dead and schedule its restart."""
        worker = self.workers[name]
        worker.alive, worker.last_error = False, error
        worker.process.join(1)
        if self.closing:   # asked to stop: its exit is expected, and it is not started again
            return
        delay = min(MAX_RESTART_DELAY_S, 2.0 ** worker.restarts)
        worker.restart_at = time.monotonic() + delay
        log.warning("worker %s died (%s); restarting it in %.0f s", name, error, delay)

    def restart_due(self) -> None:
        """Start again every dead worker whose back-off has passed; it serves once it says Ready."""
        for name, worker in list(self.workers.items()):
            if self.closing or worker.restart_at is None or time.monotonic() < worker.restart_at:
                continue
            fresh = self._start(worker.spec)
            fresh.restarts, fresh.last_error = worker.restarts + 1, worker.last_error
            self.workers[name] = fresh

    def live(self, role=None) -> list[WorkerProcess]:
        return [w for w in self.workers.values() if w.alive and (role is None or w.spec.role == role)]

    def send(self, name: str, message) -> None:
        self.workers[name].inbox.put(message)

    def receive(self, timeout: float) -> list:
        """Messages from every running worker; a worker whose pipe is closed has died (WorkerFailed)."""
        live = {w.conn: w for w in self.workers.values() if w.restart_at is None and not w.conn.closed}
        messages = []
        for conn in wait(list(live), timeout):
            try:
                messages.append(conn.recv())
            except (EOFError, OSError):
                worker = live[conn]
                worker.process.join(1)
                conn.close()
                messages.append(WorkerFailed(worker.spec.name, f"exited (exit code {worker.process.exitcode})"))
        return messages

    def stop(self, timeout: float) -> None:
        """Ask every live worker to finish, wait up to `timeout` s for all of them."""
        self.closing = True
        for worker in self.live():
            worker.inbox.put(Shutdown())
        deadline = time.monotonic() + timeout
        for worker in self.workers.values():
            worker.process.join(max(0.1, deadline - time.monotonic()))

    def kill_all(self) -> None:
        for worker in self.workers.values():
            if worker.process.is_alive():
                worker.process.kill()
            worker.process.join(5)
