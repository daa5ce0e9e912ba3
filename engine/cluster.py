"""The router: starts worker processes for a topology, routes requests, moves KV between roles.

Colocated / chunked: a request goes to the least-loaded worker and stays there.
Disaggregated: a request goes to a prefill worker; when its KV is ready the router picks a decode
worker and hands it the transfer handle. With conditional disaggregation (as in NVIDIA Dynamo), a
prompt shorter than the threshold is prefilled on the decode worker itself.
A worker that dies fails only its own requests; the router never waits on it.
"""
from __future__ import annotations

import itertools
import multiprocessing as mp
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait

from transformers import AutoTokenizer, AutoConfig

from .config import EngineConfig, SamplingParams
from .engine import TokenEvent
from .messages import (Abort, AddRequest, ImportRequest, KVReady, Ready, Shutdown, StepReport, TransferDone,
                       WorkerFailed)
from .model_loader import BUNDLED, BUNDLED_NAME, bundled_model_folder
from .prompts import PromptEncoder
from .request_stream import RequestStream
from .sequence import RequestRecord, StepRecord
from .topology import Topology, plan_workers
from .transports import TRANSPORT_COPIES, TRANSPORTS, discard
from .worker import WorkerSpec, worker_main

START_TIMEOUT_S = 600


class ClusterError(RuntimeError):
    pass


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
    copies: int = 0              # copies of the KV bytes between the two pools on this route
    receive_seconds: float = 0.0
    finished_at: float = 0.0

    @property
    def total_seconds(self) -> float:
        """From the first byte gathered on the prefill side to the KV loaded on the decode side."""
        return self.finished_at - self.send_started

    @property
    def gbps(self) -> float:
        return self.nbytes / self.total_seconds / 1e9 if self.total_seconds > 0 else float("nan")


@dataclass
class WorkerState:
    spec: WorkerSpec
    process: mp.Process
    inbox: mp.Queue
    conn: Connection
    device: str = ""
    detail: str = ""
    alive: bool = True
    outstanding: set[str] = field(default_factory=set)
    running: int = 0
    waiting: int = 0
    kv_blocks_used: int = 0
    kv_blocks_total: int = 0


class Cluster:
    def __init__(self, topology: Topology | None = None, engine: EngineConfig | None = None, transport: str = "shm",
                 conditional_threshold: int | None = None, disk_folder: str | None = None, fsync: bool = False,
                 cores: list[int] | None = None, decode_chunk_size: int = 32):
        self.topology = topology or Topology()
        base = engine or EngineConfig()
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, got {transport!r}")
        if conditional_threshold is not None and conditional_threshold < 0:
            raise ValueError(f"conditional_threshold must be >= 0 tokens, got {conditional_threshold}")
        self.transport = transport
        self.conditional_threshold = conditional_threshold
        specs, self.note = plan_workers(self.topology, base, transport, disk_folder, fsync, cores, decode_chunk_size)
        self.prompts = _prompt_encoder(base.model)
        self._model_name = BUNDLED_NAME if base.model == BUNDLED else base.model
        self.kv_capacity = base.num_blocks * base.block_size
        self.requests: list[RequestRecord] = []
        self.steps: list[StepRecord] = []
        self.transfers: dict[str, TransferRecord] = {}   # by request id, in arrival order
        self._streams: dict[str, RequestStream] = {}
        self._where: dict[str, str] = {}
        self._pending_handles: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._stopped = threading.Event()
        self.workers = {s.name: self._start(s) for s in specs}
        try:
            self._wait_ready()
        except BaseException:
            self._kill_all()
            raise
        self._thread = threading.Thread(target=self._route_events, name="router", daemon=True)
        self._thread.start()

    # ---- lifecycle ---------------------------------------------------------------------------

    def _start(self, spec: WorkerSpec) -> WorkerState:
        ctx = mp.get_context("spawn")  # fork would copy torch's thread pools in a broken state
        inbox = ctx.Queue()
        receiver, sender = ctx.Pipe(duplex=False)
        process = ctx.Process(target=worker_main, args=(spec, inbox, sender), name=spec.name, daemon=True)
        process.start()
        sender.close()  # the worker holds the only sending end: its death reads as EOF here
        return WorkerState(spec, process, inbox, receiver)

    def _receive(self, timeout: float) -> list:
        """Messages from every live worker; a worker whose pipe is closed has died."""
        live = {w.conn: w for w in self.workers.values() if w.alive}
        messages = []
        for conn in wait(list(live), timeout):
            try:
                messages.append(conn.recv())
            except (EOFError, OSError):
                worker = live[conn]
                worker.process.join(1)
                messages.append(WorkerFailed(worker.spec.name, f"exited (exit code {worker.process.exitcode})"))
        return messages

    def _wait_ready(self) -> None:
        pending = set(self.workers)
        deadline = time.monotonic() + START_TIMEOUT_S
        while pending:
            for message in self._receive(timeout=1.0):
                if isinstance(message, Ready):
                    w = self.workers[message.worker]
                    w.device, w.detail = message.device, message.detail
                    pending.discard(message.worker)
                elif isinstance(message, WorkerFailed):
                    raise ClusterError(f"worker {message.worker} failed to start:\n{message.error}")
            if time.monotonic() > deadline:
                raise ClusterError(f"workers {sorted(pending)} not ready after {START_TIMEOUT_S} s")

    def stop(self, timeout: float = 20.0) -> None:
        if self._stopped.is_set():
            return
        for w in self.workers.values():
            if w.alive:
                w.inbox.put(Shutdown())
        deadline = time.monotonic() + timeout
        for w in self.workers.values():
            w.process.join(max(0.1, deadline - time.monotonic()))
        self._stopped.set()
        self._thread.join(5)
        self._kill_all()
        self._drain_outbox()
        with self._lock:
            for rid in list(self._streams):
                self._fail(rid, "cluster stopped")
            for handle in self._pending_handles.values():
                discard(handle)
            self._pending_handles.clear()

    def _kill_all(self) -> None:
        for w in self.workers.values():
            if w.process.is_alive():
                w.process.kill()
            w.process.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # ---- requests ----------------------------------------------------------------------------

    def submit(self, prompt, params: SamplingParams | None = None, request_id: str | None = None) -> RequestStream:
        """Validates in the caller's thread (RequestError at once), then routes."""
        params = params or SamplingParams()
        ids = self.prompts.encode(prompt)
        self.prompts.check_length(len(ids), params, self.kv_capacity)
        if self._stopped.is_set():
            raise ClusterError("the cluster is stopped")
        with self._lock:
            request_id = request_id or f"req-{next(self._ids)}"
            if request_id in self._streams:
                raise ValueError(f"request id {request_id!r} is already in use")
            prefill_only = self.topology.mode == "disaggregated" and not (
                self.conditional_threshold is not None and len(ids) < self.conditional_threshold)
            if self.topology.mode == "disaggregated":
                decode = self._pick("decode")  # fail now, not after a prefill, if no decode worker lives
                worker = self._pick("prefill") if prefill_only else decode
            else:
                worker = self._pick("colocated")
            sent = time.perf_counter()
            stream = RequestStream(request_id, sent, self.abort, len(ids))
            self._streams[request_id] = stream
            self._assign(request_id, worker)
            worker.inbox.put(AddRequest(request_id, ids, params, sent, prefill_only))
        return stream

    def abort(self, request_id: str) -> None:
        with self._lock:
            name = self._where.get(request_id)
            if name and self.workers[name].alive:
                self.workers[name].inbox.put(Abort(request_id))

    def _pick(self, role: str) -> WorkerState:
        live = [w for w in self.workers.values() if w.spec.role == role and w.alive]
        if not live:
            raise ClusterError(f"no live {role} worker is left to serve this request")
        return min(live, key=lambda w: len(w.outstanding))

    def _assign(self, request_id: str, worker: WorkerState) -> None:
        old = self._where.get(request_id)
        if old:
            self.workers[old].outstanding.discard(request_id)
        self._where[request_id] = worker.spec.name
        worker.outstanding.add(request_id)

    # ---- events from workers ---------------------------------------------------------------------

    def _route_events(self) -> None:
        while not self._stopped.is_set():
            messages = self._receive(timeout=0.2)
            with self._lock:
                for message in messages:
                    self._handle(message)

    def _drain_outbox(self) -> None:
        while messages := [m for m in self._receive(timeout=0) if not isinstance(m, WorkerFailed)]:
            with self._lock:
                for message in messages:
                    self._handle(message)

    def _handle(self, message) -> None:
        if isinstance(message, StepReport):
            self.steps.extend(message.steps)
            self.requests.extend(r for r in message.finished if r.finish_reason != "handed_off")
            w = self.workers[message.worker]
            w.running, w.waiting = message.running, message.waiting
            w.kv_blocks_used, w.kv_blocks_total = message.kv_blocks_used, message.kv_blocks_total
            for event in message.events:
                self._deliver(event)
        elif isinstance(message, KVReady):
            self._route_kv(message)
        elif isinstance(message, TransferDone):
            self._pending_handles.pop(message.request_id, None)
            record = self.transfers.get(message.request_id)
            if record:
                record.receive_seconds, record.finished_at = message.receive_seconds, message.finished_at
        elif isinstance(message, WorkerFailed):
            if self.workers[message.worker].alive:
                self._worker_died(message.worker,
                                  f"worker {message.worker} failed: {message.error.strip().splitlines()[-1]}")

    def _route_kv(self, m: KVReady) -> None:
        stream = self._streams.get(m.request_id)
        if stream is None or stream.done:
            discard(m.handle)  # aborted or failed while its prefill ran
            return
        try:
            target = self._pick("decode")
        except ClusterError as exc:
            discard(m.handle)
            self._fail(m.request_id, str(exc))
            return
        self.transfers[m.request_id] = TransferRecord(m.request_id, self.transport, m.worker, target.spec.name,
                                                      m.nbytes, m.num_kv_tokens, m.send_started, m.send_seconds,
                                                      TRANSPORT_COPIES[self.transport])
        self._pending_handles[m.request_id] = m.handle
        self._assign(m.request_id, target)
        target.inbox.put(ImportRequest(m.request_id, m.prompt_ids, m.output_ids, m.params, m.arrival, m.handle,
                                       m.num_kv_tokens, m.send_started))

    def _deliver(self, event: TokenEvent) -> None:
        stream = self._streams.get(event.request_id)
        if stream is None:
            return
        stream.deliver(event)
        if event.finish_reason is not None:
            self._forget(event.request_id)

    def _forget(self, request_id: str) -> None:
        self._streams.pop(request_id, None)
        name = self._where.pop(request_id, None)
        if name:
            self.workers[name].outstanding.discard(request_id)
        handle = self._pending_handles.pop(request_id, None)
        if handle:
            discard(handle)

    def _fail(self, request_id: str, error: str) -> None:
        self._deliver(TokenEvent(request_id, None, "", time.perf_counter(), "error", error))

    def _worker_died(self, name: str, error: str) -> None:
        w = self.workers[name]
        w.alive = False
        for rid in list(w.outstanding):
            self._fail(rid, error)

    # ---- state for dashboards and tests ----------------------------------------------------------

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def active_requests(self) -> int:
        return len(self._streams)

    def snapshot(self) -> dict:
        with self._lock:
            return {name: {"role": w.spec.role, "alive": w.alive, "device": w.device, "detail": w.detail,
                           "running": w.running, "waiting": w.waiting, "kv_blocks_used": w.kv_blocks_used,
                           "kv_blocks_total": w.kv_blocks_total, "outstanding": len(w.outstanding)}
                    for name, w in self.workers.items()}


def _prompt_encoder(model: str) -> PromptEncoder:
    """The router validates prompts itself, with the tokenizer alone (no weights in this process)."""
    source = bundled_model_folder() if model == BUNDLED else model
    config = AutoConfig.from_pretrained(source)
    return PromptEncoder(AutoTokenizer.from_pretrained(source), config.vocab_size,
                         int(getattr(config, "max_position_embeddings", 2048)))
