"""A worker process: owns one device (a GPU, or a set of CPU cores), one engine and its KV pool.

Roles: `colocated` prefills and decodes; `prefill` computes a prompt's KV and first token, then
hands the KV to a transport; `decode` imports transferred KV and streams the rest.
"""
from __future__ import annotations

import os
import queue
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass

from .config import EngineConfig
from .engine import LLMEngine, TokenEvent
from .messages import (Abort, AddRequest, ImportRequest, KVReady, Ready, Shutdown, StepReport, TransferDone,
                       WorkerFailed)
from .sequence import Sequence
from .transports import Received, TransferError, discard, make_transport

ROLES = ("colocated", "prefill", "decode")
LAYERS_PER_ITERATION = 6  # an import loads this many layers between decode steps, so it never stalls them long


@dataclass
class ActiveImport:
    request: ImportRequest
    seq: Sequence
    received: Received
    started: float
    next_layer: int = 0


@dataclass
class WorkerSpec:
    name: str
    role: str
    engine: EngineConfig
    transport: str = "shm"
    disk_folder: str | None = None
    fsync: bool = False


class Outbox:
    """This worker's own pipe to the router (its own, so a worker killed mid-message corrupts
    nothing that other workers use), written by a thread: a router slow to read never blocks
    the engine's steps."""

    def __init__(self, conn):
        self._conn = conn
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._pump, name="outbox", daemon=True)
        self._thread.start()

    def send(self, message) -> None:
        self._queue.put(message)

    def _pump(self) -> None:
        while (message := self._queue.get()) is not None:
            try:
                self._conn.send(message)
            except OSError:
                return  # the router is gone

    def close(self, timeout: float = 10.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)


def worker_main(spec: WorkerSpec, inbox, conn) -> None:
    """inbox: a queue from the router; conn: the sending end of this worker's pipe to it."""
    outbox = Outbox(conn)
    try:
        Worker(spec, inbox, outbox).run()
    except Exception:
        outbox.send(WorkerFailed(spec.name, traceback.format_exc()))
        raise
    finally:
        outbox.close()


class Worker:
    def __init__(self, spec: WorkerSpec, inbox, outbox):
        self.spec = spec
        self.inbox = inbox
        self.outbox = outbox
        self.engine = LLMEngine(spec.engine, name=spec.name)
        self.transport = make_transport(spec.transport, spec.disk_folder, spec.fsync)
        self.prefill_only: set[str] = set()
        self.imports: deque[ImportRequest] = deque()
        self.active_import: ActiveImport | None = None
        self.reported_records = 0
        self.reported_steps = 0
        self.stopping = False
        import torch
        cores = sorted(os.sched_getaffinity(0))
        detail = f"{torch.get_num_threads()} threads on cores {cores}" if self.engine.loaded.device.type == "cpu" \
            else torch.cuda.get_device_name(self.engine.loaded.device)
        outbox.send(Ready(spec.name, str(self.engine.loaded.device), detail))

    def run(self) -> None:
        while not self.stopping:
            idle = not self.engine.has_work and not self.imports and not self.active_import
            self._read_inbox(block=idle)
            report = StepReport(self.spec.name)
            self._advance_import(report)
            if self.engine.has_work:
                try:
                    events = self.engine.step()
                except Exception as exc:  # a broken step fails its requests; the worker keeps serving
                    events = self.engine.fail_all(f"{self.spec.name}: step failed: {exc}")
                report.events.extend(self._hand_off_prefilled(events))
            self._send(report)
        for request in self.imports:
            discard(request.handle)
        if self.active_import:
            self.active_import.received.close()
        self._send(StepReport(self.spec.name, events=self.engine.fail_all(f"{self.spec.name} stopped")))
        self.transport.close()

    def _read_inbox(self, block: bool) -> None:
        try:
            message = self.inbox.get(timeout=0.2) if block else self.inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            self._handle(message)
            try:
                message = self.inbox.get_nowait()
            except queue.Empty:
                return

    def _handle(self, message) -> None:
        if isinstance(message, AddRequest):
            try:
                self.engine.add_request(message.prompt_ids, message.params, message.request_id, message.arrival)
                if message.prefill_only:
                    self.prefill_only.add(message.request_id)
            except ValueError as exc:
                self._send(StepReport(self.spec.name, events=[self._error(message.request_id, str(exc))]))
        elif isinstance(message, ImportRequest):
            self.imports.append(message)
        elif isinstance(message, Abort):
            self._abort(message.request_id)
        elif isinstance(message, Shutdown):
            self.stopping = True

    def _abort(self, request_id: str) -> None:
        active = self.active_import
        if active and active.request.request_id == request_id:
            self.active_import = None
            active.received.close()
            self.engine.cancel_import(active.seq)
            self._send(StepReport(self.spec.name, events=[TokenEvent(request_id, None, "", time.perf_counter(),
                                                                     "abort")]))
        for request in list(self.imports):
            if request.request_id == request_id:
                self.imports.remove(request)
                discard(request.handle)
                self._send(StepReport(self.spec.name, events=[TokenEvent(request_id, None, "", time.perf_counter(),
                                                                         "abort")]))
        self.prefill_only.discard(request_id)
        event = self.engine.abort(request_id)
        if event:
            self._send(StepReport(self.spec.name, events=[event]))

    def _advance_import(self, report: StepReport) -> None:
        """Load transferred KV a few layers per loop iteration, between decode steps, in arrival
        order and only when this worker's pool has room for it."""
        if self.active_import is None:
            if not self.imports or not self.engine.can_import(self.imports[0].num_kv_tokens):
                return
            request = self.imports.popleft()
            start = time.perf_counter()
            try:
                received = self.transport.open(request.handle, self.engine.cache.key.dtype)
            except (TransferError, OSError) as exc:
                discard(request.handle)
                report.events.append(self._error(request.request_id, f"KV transfer failed: {exc}"))
                return
            try:
                seq = self.engine.begin_import(request.prompt_ids, request.num_kv_tokens, request.params,
                                               request.request_id, request.arrival)
            except ValueError as exc:
                received.close()
                report.events.append(self._error(request.request_id, f"KV import refused: {exc}"))
                return
            self.active_import = ActiveImport(request, seq, received, start)
        active = self.active_import
        layers = slice(active.next_layer, active.next_layer + LAYERS_PER_ITERATION)
        self.engine.cache.load(active.seq.block_table, active.received.payload, layers)
        active.next_layer = layers.stop
        if active.next_layer < self.engine.cache.key.shape[0]:
            return
        self.active_import = None
        active.received.close()
        done = time.perf_counter()
        self.outbox.send(TransferDone(self.spec.name, active.request.request_id, done - active.started, done))
        report.events.extend(self.engine.finish_import(active.seq, active.request.output_ids))

    def _hand_off_prefilled(self, events: list[TokenEvent]) -> list[TokenEvent]:
        """On a prefill worker, a request's first token means its KV is complete: send it on.
        The token itself travels with the KV; the client sees it when the decode side has it."""
        if not self.prefill_only:
            return events
        finished = {e.request_id for e in events if e.finish_reason is not None}
        forward = []
        for event in events:
            rid = event.request_id
            if rid not in self.prefill_only or rid in finished:
                if rid in finished:
                    self.prefill_only.discard(rid)  # ended with its first token: nothing to hand off
                forward.append(event)
                continue
            self.prefill_only.discard(rid)
            seq, sent = self.engine.hand_off(rid, self.transport.send)
            self.outbox.send(KVReady(self.spec.name, rid, seq.prompt_ids, seq.output_ids, seq.params,
                                    seq.record.arrival, sent.handle, seq.num_computed, sent.nbytes,
                                    sent.started, sent.seconds))
        return forward

    def _error(self, request_id: str, message: str) -> TokenEvent:
        return TokenEvent(request_id, None, "", time.perf_counter(), "error", message)

    def _send(self, report: StepReport) -> None:
        engine = self.engine
        report.steps = engine.steps[self.reported_steps:]
        report.finished = engine.finished[self.reported_records:]
        self.reported_steps, self.reported_records = len(engine.steps), len(engine.finished)
        if not (report.events or report.steps or report.finished):
            return
        report.running = len(engine.scheduler.running)
        report.waiting = len(engine.scheduler.waiting) + len(self.imports)
        alloc = engine.cache.allocator
        report.kv_blocks_used, report.kv_blocks_total = alloc.num_used, alloc.num_blocks
        self.outbox.send(report)
