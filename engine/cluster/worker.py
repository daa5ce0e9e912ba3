"""A worker process: owns one device (a GPU, or a set of CPU cores), one engine and its KV pool.

Its role (topology.Role) says what it does with a request: `colocated` prefills and decodes;
`prefill` computes a prompt's KV and first token, then hands the KV to a transport; `decode`
imports handed-off KV and streams the rest.
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
from dataclasses import dataclass

from ..core.devices import describe_device
from ..core.events import FinishReason, TokenEvent
from ..core.inbox import drain
from ..core.llm_engine import LLMEngine
from ..core.sequence import Sequence
from .messages import (Abort, AddRequest, ImportKV, KVHandOff, KVReady, Ready, Release, Reserve, Reserved,
                       Shutdown, StepReport, TransferDone, WorkerFailed, WorkerLoad)
from .placement import WorkerSpec
from .topology import Role
from .transports import KVHandle, Received, TransferError, make_transport

LAYERS_PER_ITERATION = 6  # an import loads this many layers between decode steps, so it never stalls them long
IDLE_WAIT_S = 0.2         # an idle worker waits this long for a message before looking again
ORPHAN_GRACE_S = 30.0     # an orphaned worker finishes its step and cleans up within this, or is ended
RECENT_HAND_OFFS = 64     # KV sent lately, freed by the worker itself if its parent dies


@dataclass
class ActiveImport:
    """A KV import in progress: a payload loaded a few layers per iteration (`received`), or a transfer
    straight into the request's blocks that the transport completes (`pending`: a read, or a push)."""
    hand_off: KVHandOff
    seq: Sequence
    started: float
    received: Received | None = None
    pending: object | None = None   # the transport's pending transfer: poll(), cancel(), finished_at
    next_layer: int = 0
    reserved: bool = False          # into blocks reserved before the prefill (a writer may still write)

    def abandon(self) -> None:
        if self.received is not None:
            self.received.close()
        if self.pending is not None:
            self.pending.cancel()


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
    in tests). run() is the process's life; step() one iteration of it."""

    def __init__(self, spec: WorkerSpec, inbox, outbox, stop: threading.Event | None = None):
        self.spec = spec
        self.inbox = inbox
        self.outbox = outbox
        self.stop = stop or threading.Event()   # set by Shutdown, SIGTERM or the parent's death
        self.parent = multiprocessing.parent_process()   # None when the worker runs in the caller's process
        self.sent: deque[KVHandle] = deque(maxlen=RECENT_HAND_OFFS)
        self.engine = LLMEngine(spec.engine, name=spec.name)
        self.transport = make_transport(spec.transport)
        self.transport.attach(self.engine.cache, receives_pushes=spec.role == Role.DECODE)
        self.prefill_only: set[str] = set()
        self.imports: deque[KVHandOff] = deque()
        self.active_import: ActiveImport | None = None
        # Push transports: blocks reserved for prompts still prefilling elsewhere, imports into them
        # (they wait for no room, so they skip the queue), and reservations freed once no writer writes.
        self.reserved: dict[str, Sequence] = {}
        self.landing: list[ActiveImport] = []
        self.releasing: list[tuple[Sequence, float]] = []
        if self.transport.pushes:
            self.engine.layer_written = self.transport.layer_written
        device = self.engine.loaded.device
        compiled = ", decode step compiled" if self.engine.runner.compiled is not None else ""
        outbox.send(Ready(spec.name, str(device), describe_device(device) + compiled))

    def run(self) -> None:
        while not self.stop.is_set():
            self.step(wait_for_work=self.idle)
        for hand_off in self.imports:
            hand_off.handle.discard()
        for active in filter(None, [self.active_import, *self.landing]):
            active.abandon()
        if self.parent is not None and not self.parent.is_alive():   # no router is left to free what it sent
            for handle in self.sent:
                handle.discard()
        self._send(StepReport(self.spec.name, events=self.engine.fail_all(f"{self.spec.name} stopped")))
        self.transport.close()

    @property
    def idle(self) -> bool:
        return not self.engine.has_work and not self.imports and self.active_import is None and not self.landing

    def step(self, wait_for_work: bool = False) -> None:
        """Read the router's messages, load a few layers of a KV import, run one engine step, report."""
        for message in drain(self.inbox, wait_s=IDLE_WAIT_S if wait_for_work else 0.0):
            self._handle(message)
        report = StepReport(self.spec.name)
        pool_changed = self.transport.poll() | self._free_released()
        self._advance_import(report)
        for active in list(self.landing):
            self._advance_one(active, report)
        if self.engine.has_work:
            try:
                events = self.engine.step()
            except Exception as exc:  # a broken step fails its requests; the worker keeps serving
                events = self.engine.fail_all(f"{self.spec.name}: step failed: {exc}")
            report.events.extend(self._hand_off_prefilled(events))
        if self.transport.pushes:
            for request_id in self.transport.pushing:
                if request_id not in self.engine.sequences:   # ended here without a hand-off
                    self.transport.drop(request_id)
        self._send(report, load_changed=pool_changed)

    def _handle(self, message) -> None:
        if isinstance(message, AddRequest):
            try:
                self.engine.add_request(message.prompt_ids, message.params, message.request_id, message.arrival)
            except ValueError as exc:
                if message.push_target is not None:   # so the reservation is freed at once
                    self.transport.decline(message.request_id, message.push_target)
                self._send(StepReport(self.spec.name, events=[self._error(message.request_id, str(exc))]))
                return
            if message.prefill_only:
                self.prefill_only.add(message.request_id)
            if message.push_target is not None:
                self.transport.set_target(message.request_id, message.push_target)
        elif isinstance(message, ImportKV):
            if message.hand_off.request_id in self.reserved:
                self._land(message.hand_off)
            else:
                self.imports.append(message.hand_off)
        elif isinstance(message, Reserve):
            self._reserve(message)
        elif isinstance(message, Release):
            seq = self.reserved.pop(message.request_id, None)
            if seq is not None:
                self._release(seq, message.written)
        elif isinstance(message, Abort):
            self._abort(message.request_id)
        elif isinstance(message, Shutdown):
            self.stop.set()

    def _abort(self, request_id: str) -> None:
        for active in [a for a in [self.active_import, *self.landing] if a and a.hand_off.request_id == request_id]:
            self._drop_import(active)
            self._send(StepReport(self.spec.name, events=[TokenEvent.end(request_id, FinishReason.ABORT)]))
        for hand_off in list(self.imports):
            if hand_off.request_id == request_id:
                self.imports.remove(hand_off)
                hand_off.handle.discard()
                self._send(StepReport(self.spec.name, events=[TokenEvent.end(request_id, FinishReason.ABORT)]))
        self.prefill_only.discard(request_id)
        event = self.engine.abort(request_id)
        if event:
            self._send(StepReport(self.spec.name, events=[event]))

    def _advance_import(self, report: StepReport) -> None:
        """Bring transferred KV in between decode steps, in arrival order and only when this worker's
        pool has room for it: a few layers per loop iteration, or a read the transport completes."""
        if self.active_import is None:
            if not self.imports or not self.engine.can_import(self.imports[0].num_kv_tokens):
                return
            self.active_import = self._start_import(self.imports.popleft(), report)
            if self.active_import is None:
                return
        self._advance_one(self.active_import, report)

    def _advance_one(self, active: ActiveImport, report: StepReport) -> None:
        try:
            if not self._import_done(active):
                return
        except TransferError as exc:
            self._drop_import(active, abandon=False)
            report.events.append(self._error(active.hand_off.request_id, f"KV transfer failed: {exc}"))
            return
        self._forget_import(active)
        done = active.pending.finished_at if active.pending else time.perf_counter()
        self.outbox.send(TransferDone(self.spec.name, active.hand_off.request_id, done - active.started, done))
        report.events.extend(self.engine.finish_import(active.seq, active.hand_off.output_ids,
                                                         active.hand_off.output_logprobs))

    def _forget_import(self, active: ActiveImport) -> None:
        if active is self.active_import:
            self.active_import = None
        else:
            self.landing.remove(active)

    def _drop_import(self, active: ActiveImport, abandon: bool = True) -> None:
        """An import that will not complete (aborted, failed): free its blocks, at once or, for
        reserved ones, when no writer can write into them any more."""
        self._forget_import(active)
        if abandon:
            active.abandon()
        if active.reserved:
            self._release(active.seq, written=True)
        else:
            self.engine.cancel_import(active.seq)

    # ---- push transports: blocks reserved before the prefill ----

    def _reserve(self, message: Reserve) -> None:
        """Reserve blocks for a prompt another worker is to prefill, and say where they are. With no
        room now (or a prompt the prefill worker will refuse, with the reason), say so: the prompt's
        KV is then pulled when it is ready, as with no reservation."""
        engine, request_id = self.engine, message.request_id
        seq = None
        if request_id not in engine.sequences and engine.can_import(len(message.prompt_ids)):
            try:
                seq = engine.begin_import(message.prompt_ids, len(message.prompt_ids), message.params,
                                          request_id, message.arrival)
            except ValueError:
                pass
        if seq is not None:
            self.reserved[request_id] = seq
        target = self.transport.push_target(request_id, seq.block_table) if seq is not None else None
        self.outbox.send(Reserved(self.spec.name, request_id, target))

    def _land(self, hand_off: KVHandOff) -> None:
        """A hand-off for reserved blocks: pushed there already (or being pushed), or to be read into
        them; it needs no room, so it does not queue behind the other imports."""
        seq = self.reserved.pop(hand_off.request_id)
        # A push's transfer began when the prefill worker sealed it, not when this worker looked.
        started = min(time.perf_counter(), hand_off.send_started + hand_off.send_seconds)
        try:
            pending = self.transport.start_read(hand_off.handle, self.engine.cache, seq.block_table)
        except TransferError as exc:
            self._release(seq, written=True)
            self._send(StepReport(self.spec.name, events=[
                self._error(hand_off.request_id, f"KV transfer failed: {exc}")]))
            return
        self.landing.append(ActiveImport(hand_off, seq, started, pending=pending, reserved=True))

    def _release(self, seq: Sequence, written: bool) -> None:
        """Free reserved blocks: at once if no writer was told of them, else once it says it stopped."""
        self.engine.sequences.pop(seq.request_id, None)
        if written:
            self.releasing.append((seq, time.monotonic()))
        else:
            self.engine.cancel_import(seq)

    def _free_released(self) -> bool:
        done = [(seq, since) for seq, since in self.releasing if self.transport.writes_ended(seq.request_id, since)]
        for item in done:
            self.releasing.remove(item)
            self.engine.cancel_import(item[0])
        return bool(done)

    def _start_import(self, hand_off: KVHandOff, report: StepReport) -> ActiveImport | None:
        start = time.perf_counter()
        received = None
        if not self.transport.reads_into_blocks:
            try:
                received = self.transport.open(hand_off.handle, self.engine.cache.key.dtype)
            except (TransferError, OSError) as exc:
                hand_off.handle.discard()
                report.events.append(self._error(hand_off.request_id, f"KV transfer failed: {exc}"))
                return None
        try:
            seq = self.engine.begin_import(hand_off.prompt_ids, hand_off.num_kv_tokens, hand_off.params,
                                           hand_off.request_id, hand_off.arrival)
        except ValueError as exc:
            if received is not None:
                received.close()
            else:
                hand_off.handle.discard()
            report.events.append(self._error(hand_off.request_id, f"KV import refused: {exc}"))
            return None
        if received is not None:
            return ActiveImport(hand_off, seq, start, received=received)
        try:
            return ActiveImport(hand_off, seq, start, pending=self.transport.start_read(
                hand_off.handle, self.engine.cache, seq.block_table))
        except TransferError as exc:
            self.engine.cancel_import(seq)
            report.events.append(self._error(hand_off.request_id, f"KV transfer failed: {exc}"))
            return None

    def _import_done(self, active: ActiveImport) -> bool:
        if active.pending is not None:
            return active.pending.poll()
        if not active.received.ready():   # still arriving
            return False
        layers = slice(active.next_layer, active.next_layer + LAYERS_PER_ITERATION)
        self.engine.cache.load(active.seq.block_table, active.received.payload, layers)
        active.next_layer = layers.stop
        if active.next_layer < self.engine.cache.key.shape[0]:
            return False
        active.received.close()
        return True

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
        alloc = engine.cache.allocator
        report.load = WorkerLoad(len(engine.scheduler.running), len(engine.scheduler.waiting) + len(self.imports),
                                 alloc.num_used, alloc.num_blocks)
        self.outbox.send(report)
