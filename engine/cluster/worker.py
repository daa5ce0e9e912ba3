"""A worker process: owns one device (a GPU, or a set of CPU cores), one engine and its KV pool.

Its role (topology.Role) says what it does with a request: `colocated` prefills and decodes;
`prefill` computes a prompt's KV and first token, then hands the KV to a transport (or, pushing,
writes it into a decode worker's reserved blocks while it computes); `decode` imports handed-off KV
and streams the rest. Each import is one record (imports.py) whose phase says where it stands.
"""
from __future__ import annotations

import functools
import multiprocessing
import os
import queue
import signal
import threading
import time
import traceback
from collections import deque

from ..core.events import FinishReason, TokenEvent
from ..core.inbox import drain
from ..core.llm_engine import LLMEngine
from .imports import Import, ImportPhase
from .messages import (Abort, AddRequest, ImportKV, KVHandOff, KVReady, Ready, Release, Reserve, Reserved,
                       Shutdown, StepReport, TransferDone, WorkerFailed, WorkerLoad)
from .placement import WorkerSpec
from .topology import Role
from .transports import KVHandle, TransferError, make_transport

IDLE_WAIT_S = 0.2         # an idle worker waits this long for a message before looking again
ORPHAN_GRACE_S = 30.0     # an orphaned worker finishes its step and cleans up within this, or is ended
RECENT_HAND_OFFS = 64     # KV sent lately, freed by the worker itself if its parent dies


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
    # Ctrl-C reaches the whole process group: the parent stops its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    _watch_parent(stop)
    outbox = Outbox(conn)
    try:
        Worker(spec, inbox, outbox, stop).run()
    except Exception:
        outbox.send(WorkerFailed(spec.name, traceback.format_exc()))
        raise
    finally:
        outbox.close()


def _watch_parent(stop: threading.Event) -> None:
    """A worker whose parent (the process that started it: the server, the lab) died, killed or crashed,
    stops by itself, and is gone within a grace period even if a step never ends: nothing else would
    ever stop it. The parent is watched through multiprocessing's pipe from it, which reads EOF when it
    dies; the process id of its parent is the fork server's, which outlives it while workers run."""
    def watch():
        multiprocessing.parent_process().join()
        stop.set()
        time.sleep(ORPHAN_GRACE_S)
        os._exit(1)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class Worker:
    """`inbox` is a queue of the router's messages; `outbox` has send(message) (an Outbox, or a stand-in
    in tests); `engine`, if given, is used instead of building one from the spec (tests give one with a
    stand-in model). run() is the process's life; step() one iteration of it."""

    def __init__(self, spec: WorkerSpec, inbox, outbox, stop: threading.Event | None = None,
                 engine: LLMEngine | None = None):
        self.spec = spec
        self.inbox = inbox
        self.outbox = outbox
        self.stop = stop or threading.Event()   # set by Shutdown, SIGTERM or the parent's death
        self.parent = multiprocessing.parent_process()   # None when the worker runs in the caller's process
        self.sent: deque[KVHandle] = deque(maxlen=RECENT_HAND_OFFS)
        self.engine = engine or LLMEngine(spec.engine, name=spec.name)
        self.transport = make_transport(spec.transport)
        self.transport.attach(self.engine.cache, receives_pushes=spec.role == Role.DECODE)
        self.prefill_only: set[str] = set()          # prompts to hand off after their first token
        self.imports: dict[str, Import] = {}         # KV coming in, by request id, in arrival order
        self.releasing: list[Import] = []            # ended reservations, until no writer can write
        if self.transport.pushes:
            self.engine.layer_written = self.transport.layer_written
        outbox.send(Ready(spec.name, str(self.engine.device), self.engine.describe()))

    def run(self) -> None:
        while not self.stop.is_set():
            self.step(wait_for_work=self.idle)
        for record in self.imports.values():
            if record.incoming is not None:
                record.incoming.cancel()
            elif record.phase == ImportPhase.QUEUED:
                record.hand_off.handle.discard()
        if self.parent is not None and not self.parent.is_alive():   # no router is left to free what it sent
            for handle in self.sent:
                handle.discard()
        self._send(StepReport(self.spec.name, events=self.engine.fail_all(f"{self.spec.name} stopped")))
        self.transport.close()

    @property
    def idle(self) -> bool:
        return not self.engine.has_work and not self._in(ImportPhase.QUEUED, ImportPhase.LANDING)

    def _in(self, *phases: ImportPhase) -> list[Import]:
        return [r for r in self.imports.values() if r.phase in phases]

    def step(self, wait_for_work: bool = False) -> None:
        """Read the router's messages, move the imports along, run one engine step, report."""
        report = StepReport(self.spec.name)
        for message in drain(self.inbox, wait_s=IDLE_WAIT_S if wait_for_work else 0.0):
            self._handle(message, report)
        pool_changed = self.transport.poll() | self._free_released()
        self._start_queued(report)
        for record in self._in(ImportPhase.LANDING):
            self._advance(record, report)
        if self.engine.has_work:
            try:
                events = self.engine.step()
            except Exception as exc:  # a broken step fails its requests; the worker keeps serving
                events = self.engine.fail_all(f"{self.spec.name}: step failed: {exc}")
            report.events.extend(self._hand_off_prefilled(events))
        if self.transport.pushes:
            for request_id in self.transport.pushing:
                if not self.engine.has_request(request_id):   # ended here without a hand-off
                    self.transport.drop(request_id)
        self._send(report, load_changed=pool_changed)

    def _handle(self, message, report: StepReport) -> None:
        if isinstance(message, AddRequest):
            self._add(message, report)
        elif isinstance(message, ImportKV):
            self._arrived(message.hand_off, report)
        elif isinstance(message, Reserve):
            self._reserve(message)
        elif isinstance(message, Release):
            self._release(message)
        elif isinstance(message, Abort):
            self._abort(message.request_id, report)
        elif isinstance(message, Shutdown):
            self.stop.set()

    # ---- prompts: prefill (and decode, unless handed off) ----

    def _add(self, message: AddRequest, report: StepReport) -> None:
        """The prompt was encoded and checked at the cluster's front door."""
        try:
            self.engine.admit(message.prompt_ids, message.params, message.request_id, message.arrival)
        except ValueError as exc:   # its id is in use here
            if message.push_target is not None:   # so the reservation is freed at once
                self.transport.decline(message.request_id, message.push_target)
            report.events.append(self._error(message.request_id, str(exc)))
            return
        if message.prefill_only:
            self.prefill_only.add(message.request_id)
        if message.push_target is not None:
            self.transport.set_target(message.request_id, message.push_target)

    def _hand_off_prefilled(self, events: list[TokenEvent]) -> list[TokenEvent]:
        """On a prefill worker, a request's first token means its KV is complete: send it on (or seal
        its push). The token itself travels with the KV; the client sees it when the decode side has it."""
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
            pushed = self.transport.pushes and rid in self.transport.pushing
            send = functools.partial(self.transport.seal, rid) if pushed else self.transport.send
            try:
                seq, sent = self.engine.hand_off(rid, send)
            except (TransferError, OSError) as exc:   # the engine freed the prompt's blocks
                forward.append(self._error(rid, f"KV transfer failed: {exc}"))
                continue
            self.sent.append(sent.handle)
            self.outbox.send(KVReady(self.spec.name, KVHandOff(
                rid, seq.prompt_ids, seq.output_ids, seq.params, seq.record.arrival, sent.handle, seq.num_computed,
                sent.nbytes, sent.started, sent.seconds, tuple(seq.output_logprobs), pushed,
                sent.writing_seconds)))
        return forward

    def _abort(self, request_id: str, report: StepReport) -> None:
        record = self.imports.get(request_id)
        if record is not None and record.phase in (ImportPhase.QUEUED, ImportPhase.LANDING):
            self._drop(record)
            report.events.append(TokenEvent.end(request_id, FinishReason.ABORT))
        self.prefill_only.discard(request_id)
        event = self.engine.abort(request_id)
        if event:
            report.events.append(event)

    # ---- KV coming in ----

    def _reserve(self, message: Reserve) -> None:
        """Reserve blocks for a prompt another worker is to prefill, and say where they are. With no
        room now (or a pool others cannot write into), say so: the prompt's KV is then pulled when it
        is ready, as with no reservation."""
        request_id, engine, target = message.request_id, self.engine, None
        if (request_id not in self.imports and not engine.has_request(request_id)
                and engine.can_import(len(message.prompt_ids))):
            seq = engine.begin_import(message.prompt_ids, len(message.prompt_ids), message.params, request_id,
                                      message.arrival)
            target = self.transport.push_target(request_id, seq.block_table)
            if target is None:
                engine.cancel_import(seq)
            else:
                self.imports[request_id] = Import(request_id, ImportPhase.RESERVED, seq=seq, reserved=True)
        self.outbox.send(Reserved(self.spec.name, request_id, target))

    def _arrived(self, hand_off: KVHandOff, report: StepReport) -> None:
        """A hand-off for reserved blocks lands at once (it needs no room, so it does not queue behind
        the others); any other waits its turn for room."""
        record = self.imports.get(hand_off.request_id)
        if record is None:
            self.imports[hand_off.request_id] = Import(hand_off.request_id, ImportPhase.QUEUED, hand_off)
        elif record.phase == ImportPhase.RESERVED:
            record.hand_off = hand_off
            # A push's transfer began when the prefill worker sealed it, not when this worker looked.
            self._land(record, min(time.perf_counter(), hand_off.send_started + hand_off.send_seconds), report)
        else:   # a second hand-off for one request: never sent by the router
            hand_off.handle.discard()

    def _start_queued(self, report: StepReport) -> None:
        """Start the oldest queued import when this pool has room and no other queued one is still
        loading: one at a time, so the layers loaded between decode steps stay few."""
        queued = self._in(ImportPhase.QUEUED)
        if not queued or any(not r.reserved for r in self._in(ImportPhase.LANDING)):
            return
        record = queued[0]
        hand_off = record.hand_off
        if not self.engine.can_import(hand_off.num_kv_tokens):
            return
        try:
            record.seq = self.engine.begin_import(hand_off.prompt_ids, hand_off.num_kv_tokens, hand_off.params,
                                                  hand_off.request_id, hand_off.arrival)
        except ValueError as exc:
            del self.imports[record.request_id]
            hand_off.handle.discard()
            report.events.append(self._error(record.request_id, f"KV import refused: {exc}"))
            return
        self._land(record, time.perf_counter(), report)

    def _land(self, record: Import, started: float, report: StepReport) -> None:
        """Begin bringing the KV into the record's blocks."""
        try:
            record.incoming = self.transport.receive(record.hand_off.handle, record.seq.block_table)
        except (TransferError, OSError) as exc:
            record.hand_off.handle.discard()
            self._drop(record, abandon=False)
            report.events.append(self._error(record.request_id, f"KV transfer failed: {exc}"))
            return
        record.phase, record.started = ImportPhase.LANDING, started

    def _advance(self, record: Import, report: StepReport) -> None:
        try:
            if not record.incoming.poll():
                return
        except TransferError as exc:   # the incoming transfer freed what it held
            self._drop(record, abandon=False)
            report.events.append(self._error(record.request_id, f"KV transfer failed: {exc}"))
            return
        del self.imports[record.request_id]
        done = record.incoming.finished_at
        self.outbox.send(TransferDone(self.spec.name, record.request_id, done - record.started, done))
        report.events.extend(self.engine.finish_import(record.seq, record.hand_off.output_ids,
                                                         record.hand_off.output_logprobs))

    def _drop(self, record: Import, abandon: bool = True) -> None:
        """An import that will not complete (aborted, failed): free its blocks, at once or, for
        reserved ones, when no writer can write into them any more."""
        del self.imports[record.request_id]
        if abandon and record.incoming is not None:
            record.incoming.cancel()
        elif abandon and record.phase == ImportPhase.QUEUED:
            record.hand_off.handle.discard()
        if record.reserved:
            self._free_after_writer(record)
        elif record.seq is not None:
            self.engine.cancel_import(record.seq)

    def _release(self, message: Release) -> None:
        """The request ended before its hand-off came: free its reservation, at once if no writer was
        told of it."""
        record = self.imports.get(message.request_id)
        if record is None or record.phase != ImportPhase.RESERVED:
            return
        del self.imports[record.request_id]
        if message.written:
            self._free_after_writer(record)
        else:
            self.engine.cancel_import(record.seq)

    def _free_after_writer(self, record: Import) -> None:
        """Reserved blocks a writer may still write into: forgotten now, freed once it says it stopped."""
        self.engine.forget_import(record.seq)
        record.phase, record.released_at = ImportPhase.RELEASING, time.monotonic()
        self.releasing.append(record)

    def _free_released(self) -> bool:
        done = [r for r in self.releasing if self.transport.writes_ended(r.request_id, r.released_at)]
        for record in done:
            self.releasing.remove(record)
            self.engine.free_blocks(record.seq.block_table)
        return bool(done)

    # ---- reports ----

    def _error(self, request_id: str, message: str) -> TokenEvent:
        return TokenEvent.end(request_id, FinishReason.ERROR, message)

    def _send(self, report: StepReport, load_changed: bool = False) -> None:
        engine = self.engine
        # Reported records leave the worker: the router keeps the history, bounded.
        report.steps, report.finished = list(engine.steps), list(engine.finished)
        engine.steps.clear()
        engine.finished.clear()
        if not (report.events or report.steps or report.finished or load_changed):
            return
        report.load = WorkerLoad(engine.num_running, engine.num_waiting + len(self._in(ImportPhase.QUEUED)),
                                 engine.kv_blocks_used, engine.kv_blocks_total, engine.prefix_cache_stats())
        self.outbox.send(report)
