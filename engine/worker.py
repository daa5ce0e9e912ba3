"""A worker process: owns one device (a GPU, or a set of CPU cores), one engine and its KV pool.

Roles: `colocated` prefills and decodes; `prefill` computes a prompt's KV and first token, then
hands the KV to a transport; `decode` imports transferred KV and streams the rest.
"""
from __future__ import annotations

import os
import queue
import time
import traceback
from collections import deque
from dataclasses import dataclass

from .config import EngineConfig
from .engine import LLMEngine, TokenEvent
from .messages import (Abort, AddRequest, ImportRequest, KVReady, Ready, Shutdown, StepReport, TransferDone,
                       WorkerFailed)
from .transports import TransferError, discard, make_transport

ROLES = ("colocated", "prefill", "decode")


@dataclass
class WorkerSpec:
    name: str
    role: str
    engine: EngineConfig
    transport: str = "shm"
    disk_folder: str | None = None
    fsync: bool = False


def worker_main(spec: WorkerSpec, inbox, outbox) -> None:
    try:
        Worker(spec, inbox, outbox).run()
    except Exception:
        outbox.put(WorkerFailed(spec.name, traceback.format_exc()))
        raise


class Worker:
    def __init__(self, spec: WorkerSpec, inbox, outbox):
        self.spec = spec
        self.inbox = inbox
        self.outbox = outbox
        self.engine = LLMEngine(spec.engine, name=spec.name)
        self.transport = make_transport(spec.transport, spec.disk_folder, spec.fsync)
        self.prefill_only: set[str] = set()
        self.imports: deque[ImportRequest] = deque()
        self.reported_records = 0
        self.reported_steps = 0
        self.stopping = False
        import torch
        cores = sorted(os.sched_getaffinity(0))
        detail = f"{torch.get_num_threads()} threads on cores {cores}" if self.engine.loaded.device.type == "cpu" \
            else torch.cuda.get_device_name(self.engine.loaded.device)
        outbox.put(Ready(spec.name, str(self.engine.loaded.device), detail))

    def run(self) -> None:
        while not self.stopping:
            idle = not self.engine.has_work and not self.imports
            self._read_inbox(block=idle)
            report = StepReport(self.spec.name)
            self._import_waiting(report)
            if self.engine.has_work:
                try:
                    events = self.engine.step()
                except Exception as exc:  # a broken step fails its requests; the worker keeps serving
                    events = self.engine.fail_all(f"{self.spec.name}: step failed: {exc}")
                report.events.extend(self._hand_off_prefilled(events))
            self._send(report)
        for request in self.imports:
            discard(request.handle)
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

    def _import_waiting(self, report: StepReport) -> None:
        """Load transferred KV in arrival order, as long as this worker's pool has room."""
        while self.imports and self.engine.can_import(self.imports[0].num_kv_tokens):
            request = self.imports.popleft()
            start = time.perf_counter()
            try:
                events = self.engine.add_prefilled(
                    request.prompt_ids, request.output_ids, request.num_kv_tokens,
                    lambda cache, blocks: self.transport.receive(request.handle, cache, blocks),
                    request.params, request.request_id, request.arrival)
            except (TransferError, ValueError, OSError) as exc:
                discard(request.handle)
                report.events.append(self._error(request.request_id, f"KV transfer failed: {exc}"))
                continue
            done = time.perf_counter()
            self.outbox.put(TransferDone(self.spec.name, request.request_id, done - start, done))
            report.events.extend(events)

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
            self.outbox.put(KVReady(self.spec.name, rid, seq.prompt_ids, seq.output_ids, seq.params,
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
        report.running, report.waiting = len(engine.scheduler.running), len(engine.scheduler.waiting) + len(self.imports)
        alloc = engine.cache.allocator
        report.kv_blocks_used, report.kv_blocks_total = alloc.num_used, alloc.num_blocks
        self.outbox.put(report)
