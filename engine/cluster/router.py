"""Where each request goes and what happens to what comes back.

Colocated / chunked: a request goes to the least-loaded worker and stays there.
Disaggregated: a request goes to a prefill worker; when its KV is ready the router picks a decode
worker and forwards the hand-off. With a push transport (nixl) the decode worker is picked up front:
it reserves blocks for the prompt, and the router sends the prompt to the prefill worker with their
addresses, so it can write the KV into them while it computes (SGLang's prefill server likewise
waits for the decode side's allocation before it schedules a prompt). With conditional
disaggregation (as in NVIDIA Dynamo), a prompt shorter than the threshold is prefilled on the decode
worker itself.
A worker that dies fails only its own requests. Not thread-safe: the cluster calls it under its lock.
"""
from __future__ import annotations

from ..core.config import SamplingParams
from ..core.events import FinishReason, TokenEvent
from ..core.request_stream import RequestStream
from ..core.sequence import RequestRecord, StepRecord
from .history import REQUESTS_KEPT, STEPS_KEPT, TRANSFERS_KEPT, BoundedDict, History
from .messages import (Abort, AddRequest, ImportKV, KVHandle, KVReady, Ready, Release, Reserve, Reserved,
                       StepReport, TransferDone, WorkerFailed, WorkerLoad)
from .records import TransferRecord, WorkerStatus
from .topology import Mode, Role, Topology
from .transports import PUSH_COPIES, TransportSettings
from .worker_pool import ClusterError, WorkerPool, WorkerProcess


class Router:
    def __init__(self, pool: WorkerPool, topology: Topology, transport: TransportSettings,
                 conditional_threshold: int | None):
        self.pool = pool
        self.topology = topology
        self.transport = transport
        self.conditional_threshold = conditional_threshold
        self.requests: History[RequestRecord] = History(REQUESTS_KEPT)
        self.steps: History[StepRecord] = History(STEPS_KEPT)
        self.transfers: dict[str, TransferRecord] = BoundedDict(TRANSFERS_KEPT)   # by request id, in arrival order
        self.streams: dict[str, RequestStream] = {}
        self._where: dict[str, str] = {}                   # request id -> worker name
        self._outstanding: dict[str, set[str]] = {name: set() for name in pool.workers}
        self._load: dict[str, WorkerLoad] = {name: WorkerLoad() for name in pool.workers}
        self._pending_handles: dict[str, KVHandle] = {}  # sent on to a decode worker, not yet loaded
        self._aborted: set[str] = set()   # cancelled, not yet ended: a hand-off for one of them is dropped
        self._reserved_on: dict[str, str] = {}   # push: request id -> the decode worker holding blocks for it
        self._awaiting_target: dict[str, tuple[str, AddRequest]] = {}   # push: held until the reservation
        self._targeted: set[str] = set()          # push: reservations whose address the prefill worker has

    # ---- requests in ------------------------------------------------------------------------------

    def add(self, stream: RequestStream, prompt_ids: list[int], params: SamplingParams) -> None:
        if stream.request_id in self.streams:
            raise ValueError(f"request id {stream.request_id!r} is already in use")
        if self.topology.mode == Mode.DISAGGREGATED:
            decode = self._pick(Role.DECODE)  # fail now, not after a prefill, if no decode worker lives
            prefill_only = not (self.conditional_threshold is not None
                                and len(prompt_ids) < self.conditional_threshold)
            worker = self._pick(Role.PREFILL) if prefill_only else decode
        else:
            prefill_only, worker = False, self._pick(Role.COLOCATED)
        self.streams[stream.request_id] = stream
        self._assign(stream.request_id, worker)
        request = AddRequest(stream.request_id, prompt_ids, params, stream.sent, prefill_only)
        if prefill_only and self.transport.pushes:
            self._reserved_on[stream.request_id] = decode.spec.name
            self._outstanding[decode.spec.name].add(stream.request_id)   # its death fails the request
            self._awaiting_target[stream.request_id] = (worker.spec.name, request)
            decode.inbox.put(Reserve(stream.request_id, prompt_ids, params, stream.sent))
        else:
            worker.inbox.put(request)

    def abort(self, request_id: str) -> None:
        """Cancel at any stage. A prefill worker may already have handed the request off when the abort
        reaches it: the router then drops the hand-off itself (_route_kv)."""
        if request_id not in self.streams:
            return
        self._aborted.add(request_id)
        name = self._where.get(request_id)
        if name and self.pool.workers[name].alive:
            self.pool.send(name, Abort(request_id))

    def _pick(self, role: Role) -> WorkerProcess:
        live = self.pool.live(role)
        if not live:
            raise ClusterError(f"no live {role} worker is left to serve this request")
        return min(live, key=lambda w: len(self._outstanding[w.spec.name]))

    def _assign(self, request_id: str, worker: WorkerProcess) -> None:
        old = self._where.get(request_id)
        if old:
            self._outstanding[old].discard(request_id)
        self._where[request_id] = worker.spec.name
        self._outstanding[worker.spec.name].add(request_id)

    # ---- messages from workers ----------------------------------------------------------------------

    def handle(self, message) -> None:
        if isinstance(message, StepReport):
            self.steps.extend(message.steps)
            self.requests.extend(r for r in message.finished if r.finish_reason != FinishReason.HANDED_OFF)
            self._load[message.worker] = message.load
            for event in message.events:
                self._deliver(event)
        elif isinstance(message, KVReady):
            self._route_kv(message)
        elif isinstance(message, Reserved):
            self._pass_target(message)
        elif isinstance(message, TransferDone):
            self._pending_handles.pop(message.request_id, None)
            record = self.transfers.get(message.request_id)
            if record:
                record.receive_seconds, record.finished_at = message.receive_seconds, message.finished_at
        elif isinstance(message, Ready):
            self._load[message.worker] = WorkerLoad()
            self.pool.ready(message)
        elif isinstance(message, WorkerFailed):
            if self.pool.workers[message.worker].restart_at is None:   # its first notice of death
                self._worker_died(message.worker, message.error.strip().splitlines()[-1])

    def _route_kv(self, ready: KVReady) -> None:
        hand_off = ready.hand_off
        stream = self.streams.get(hand_off.request_id)
        if stream is None or stream.done:
            hand_off.handle.discard()  # failed while its prefill ran
            return
        if hand_off.request_id in self._aborted:
            hand_off.handle.discard()  # cancelled while its prefill ran
            self._deliver(TokenEvent.end(hand_off.request_id, FinishReason.ABORT))
            return
        try:
            target = self._decode_worker_for(hand_off.request_id)
        except ClusterError as exc:
            hand_off.handle.discard()
            self.fail(hand_off.request_id, str(exc))
            return
        self.transfers[hand_off.request_id] = TransferRecord(
            hand_off.request_id, self.transport.name, ready.worker, target.spec.name, hand_off.nbytes,
            hand_off.num_kv_tokens, hand_off.send_started, hand_off.send_seconds,
            PUSH_COPIES if hand_off.written_during_prefill else self.transport.copies,
            during_prefill=hand_off.written_during_prefill, writing_seconds=hand_off.writing_seconds)
        self._pending_handles[hand_off.request_id] = hand_off.handle
        self._assign(hand_off.request_id, target)
        target.inbox.put(ImportKV(hand_off))

    def _decode_worker_for(self, request_id: str) -> WorkerProcess:
        """The one holding blocks for it, if any (it may have none: it reserves only when it has room)."""
        name = self._reserved_on.pop(request_id, None)
        self._targeted.discard(request_id)
        if name is None:
            return self._pick(Role.DECODE)
        worker = self.pool.workers[name]
        if not worker.alive:
            raise ClusterError(f"decode worker {name}, which held this request's blocks, is down")
        return worker

    def _pass_target(self, reserved: Reserved) -> None:
        """The decode worker answered: send the prompt to its prefill worker, with where to write
        (or, if it had no room, without: the KV is pulled when it is ready)."""
        request_id = reserved.request_id
        awaiting = self._awaiting_target.pop(request_id, None)
        if awaiting is None:
            return   # ended meanwhile: the Release sent then frees the blocks
        prefill, request = awaiting
        if reserved.target is None:
            self._reserved_on.pop(request_id, None)
            self._outstanding[reserved.worker].discard(request_id)
        else:
            self._targeted.add(request_id)
            request.push_target = reserved.target
        self.pool.send(prefill, request)

    def _deliver(self, event: TokenEvent) -> None:
        stream = self.streams.get(event.request_id)
        if stream is None:
            return
        stream.deliver(event)
        if event.finish_reason is not None:
            self._forget(event.request_id)

    def _forget(self, request_id: str) -> None:
        self.streams.pop(request_id, None)
        self._aborted.discard(request_id)
        name = self._where.pop(request_id, None)
        if name:
            self._outstanding[name].discard(request_id)
        reserved_on = self._reserved_on.pop(request_id, None)
        if reserved_on:
            self._outstanding[reserved_on].discard(request_id)
            if self.pool.workers[reserved_on].alive:
                self.pool.send(reserved_on, Release(request_id, written=request_id in self._targeted))
        self._targeted.discard(request_id)
        self._awaiting_target.pop(request_id, None)
        handle = self._pending_handles.pop(request_id, None)
        if handle:
            handle.discard()

    def fail(self, request_id: str, error: str) -> None:
        self._deliver(TokenEvent.end(request_id, FinishReason.ERROR, error))

    def fail_all(self, error: str) -> None:
        """End every open request (the cluster is stopping) and free every KV still in flight."""
        for request_id in list(self.streams):
            self.fail(request_id, error)
        for handle in self._pending_handles.values():
            handle.discard()
        self._pending_handles.clear()

    def _worker_died(self, name: str, error: str) -> None:
        self.pool.died(name, error)
        for request_id in list(self._outstanding[name]):
            self.fail(request_id, f"worker {name} failed: {error}")

    # ---- state -------------------------------------------------------------------------------------

    def status(self) -> list[WorkerStatus]:
        return [WorkerStatus(name, w.spec.role, w.process.pid, w.alive, w.device, w.detail, self._load[name],
                             len(self._outstanding[name]), w.restarts, w.last_error,
                             tuple(w.spec.engine.cpu_cores or ()))
                for name, w in self.pool.workers.items()]
