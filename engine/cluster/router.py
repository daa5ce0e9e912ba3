"""Where each request goes and what happens to what comes back.

Colocated / chunked: a request goes to the least-loaded worker and stays there.
Disaggregated: a request goes to a prefill worker; when its KV is ready the router picks a decode
worker and forwards the hand-off. With a push transport (nixl) the decode worker is picked up front:
it reserves blocks for the prompt, and the router sends the prompt to the prefill worker with their
addresses, so it can write the KV into them while it computes (SGLang's prefill server likewise
waits for the decode side's allocation before it schedules a prompt). With conditional
disaggregation (as in NVIDIA Dynamo), a prompt shorter than the threshold is prefilled on the decode
worker itself.
Each request is one RequestState whose Phase says where it is (request_state.py).
A worker that dies fails only the requests that depend on it. Not thread-safe: the cluster calls it
under its lock.
"""
from __future__ import annotations

from ..core.config import SamplingParams
from ..core.events import FinishReason, TokenEvent
from ..core.request_stream import RequestStream
from ..core.sequence import RequestRecord, StepRecord
from .history import REQUESTS_KEPT, STEPS_KEPT, TRANSFERS_KEPT, BoundedDict, History
from .messages import (Abort, AddRequest, ImportKV, KVReady, Ready, Release, Reserve, Reserved, StepReport,
                       TransferDone, WorkerFailed, WorkerLoad)
from .prefix_affinity import PrefixAffinity
from .records import TransferRecord, WorkerStatus
from .request_state import Phase, RequestState
from .topology import Mode, Role, Topology
from .transports import PUSH_COPIES, TransportSettings
from .worker_pool import ClusterError, WorkerPool, WorkerProcess


class Router:
    def __init__(self, pool: WorkerPool, topology: Topology, transport: TransportSettings,
                 conditional_threshold: int | None, affinity: PrefixAffinity | None = None):
        """`affinity`: cache-aware routing of prompts (prefix_affinity.py); None: the least loaded worker."""
        self.pool = pool
        self.topology = topology
        self.transport = transport
        self.conditional_threshold = conditional_threshold
        self.affinity = affinity
        self.requests: History[RequestRecord] = History(REQUESTS_KEPT)
        self.steps: History[StepRecord] = History(STEPS_KEPT)
        self.transfers: dict[str, TransferRecord] = BoundedDict(TRANSFERS_KEPT)   # by request id, in arrival order
        self.live: dict[str, RequestState] = {}    # every request not yet ended, by id
        self._load: dict[str, WorkerLoad] = {name: WorkerLoad() for name in pool.workers}

    # ---- requests in ------------------------------------------------------------------------------

    def add(self, stream: RequestStream, prompt_ids: list[int], params: SamplingParams) -> None:
        """A request its front door has checked: to its first worker (or, pushing, to a decode worker
        to reserve blocks first)."""
        if stream.request_id in self.live:
            raise ValueError(f"request id {stream.request_id!r} is already in use")
        if self.topology.mode == Mode.DISAGGREGATED:
            decode = self._pick(Role.DECODE)  # fail now, not after a prefill, if no decode worker lives
            prefill_only = not (self.conditional_threshold is not None
                                and len(prompt_ids) < self.conditional_threshold)
            worker = self._pick(Role.PREFILL, prompt_ids) if prefill_only else decode
        else:
            prefill_only, worker = False, self._pick(Role.COLOCATED, prompt_ids)
        request = AddRequest(stream.request_id, prompt_ids, params, stream.sent, prefill_only)
        state = RequestState(stream, Phase.PREFILLING if prefill_only else Phase.RUNNING, worker.spec.name)
        self.live[stream.request_id] = state
        if prefill_only and self.transport.pushes:
            state.phase, state.reserved_on, state.held = Phase.RESERVING, decode.spec.name, request
            decode.inbox.put(Reserve(stream.request_id, prompt_ids, params, stream.sent))
        else:
            worker.inbox.put(request)

    def abort(self, request_id: str) -> None:
        """Cancel at any phase. A prefill worker may already have handed the request off when the abort
        reaches it: the router then drops the hand-off itself (_route_kv)."""
        state = self.live.get(request_id)
        if state is None:
            return
        if state.phase == Phase.RESERVING:   # its prompt is not on any worker yet: end it now
            self._deliver(TokenEvent.end(request_id, FinishReason.ABORT))
            return
        state.aborted = True
        if self.pool.workers[state.worker].alive:
            self.pool.send(state.worker, Abort(request_id))

    def _pick(self, role: Role, prompt_ids: list[int] | None = None) -> WorkerProcess:
        """The least loaded live worker of `role`; for a prompt to prefill, with cache-aware routing on,
        the one likely to hold its prefix."""
        live = {w.spec.name: w for w in self.pool.live(role)}
        if not live:
            raise ClusterError(f"no live {role} worker is left to serve this request")
        if self.affinity is None or prompt_ids is None:
            return min(live.values(), key=lambda w: self.outstanding(w.spec.name))
        name = self.affinity.choose(prompt_ids, {name: self.outstanding(name) for name in live})
        self.affinity.routed(prompt_ids, name)
        return live[name]

    def outstanding(self, worker: str) -> int:
        """Requests that depend on `worker`: placed there, or holding blocks there."""
        return sum(state.on(worker) for state in self.live.values())

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
            self._reserved(message)
        elif isinstance(message, TransferDone):
            self._landed(message)
        elif isinstance(message, Ready):
            self._load[message.worker] = WorkerLoad()
            self.pool.ready(message)
        elif isinstance(message, WorkerFailed):
            if self.pool.workers[message.worker].restart_at is None:   # its first notice of death
                self._worker_died(message.worker, message.error.strip().splitlines()[-1])

    def _reserved(self, reserved: Reserved) -> None:
        """RESERVING -> PREFILLING: the decode worker answered; send the prompt to its prefill worker,
        with where to write (or, if it had no room, without: the KV is pulled when it is ready)."""
        state = self.live.get(reserved.request_id)
        if state is None or state.phase != Phase.RESERVING:
            return   # ended meanwhile: the Release sent then frees the blocks
        request, state.held = state.held, None
        if reserved.target is None:
            state.reserved_on = None
        else:
            state.targeted, request.push_target = True, reserved.target
        state.phase = Phase.PREFILLING
        self.pool.send(state.worker, request)

    def _route_kv(self, ready: KVReady) -> None:
        """PREFILLING -> TRANSFERRING: forward the hand-off to the decode worker holding its blocks, or
        the least busy one."""
        hand_off = ready.hand_off
        state = self.live.get(hand_off.request_id)
        if state is None or state.stream.done:
            hand_off.handle.discard()  # failed while its prefill ran
            return
        if state.aborted:
            hand_off.handle.discard()  # cancelled while its prefill ran
            self._deliver(TokenEvent.end(hand_off.request_id, FinishReason.ABORT))
            return
        try:
            target = self._decode_worker_for(state)
        except ClusterError as exc:
            hand_off.handle.discard()
            self.fail(hand_off.request_id, str(exc))
            return
        self.transfers[hand_off.request_id] = TransferRecord(
            hand_off.request_id, self.transport.name, ready.worker, target.spec.name, hand_off.nbytes,
            hand_off.num_kv_tokens, hand_off.send_started, hand_off.send_seconds,
            PUSH_COPIES if hand_off.written_during_prefill else self.transport.copies,
            during_prefill=hand_off.written_during_prefill, writing_seconds=hand_off.writing_seconds)
        state.phase, state.worker, state.handle = Phase.TRANSFERRING, target.spec.name, hand_off.handle
        state.reserved_on, state.targeted = None, False   # the hand-off now owns the reservation
        target.inbox.put(ImportKV(hand_off))

    def _decode_worker_for(self, state: RequestState) -> WorkerProcess:
        """The one holding blocks for it, if any (it may have none: it reserves only when it has room)."""
        if state.reserved_on is None:
            return self._pick(Role.DECODE)
        worker = self.pool.workers[state.reserved_on]
        if not worker.alive:
            raise ClusterError(f"decode worker {state.reserved_on}, which held this request's blocks, is down")
        return worker

    def _landed(self, done: TransferDone) -> None:
        """TRANSFERRING -> RUNNING: the decode worker has the KV."""
        state = self.live.get(done.request_id)
        if state is not None and state.phase == Phase.TRANSFERRING:
            state.phase, state.handle = Phase.RUNNING, None
        record = self.transfers.get(done.request_id)
        if record:
            record.receive_seconds, record.finished_at = done.receive_seconds, done.finished_at

    def _deliver(self, event: TokenEvent) -> None:
        state = self.live.get(event.request_id)
        if state is None:
            return
        state.stream.deliver(event)
        if event.finish_reason is not None:
            self._end(event.request_id)

    def _end(self, request_id: str) -> None:
        """The request ended, in any phase: free what its record holds."""
        state = self.live.pop(request_id)
        if state.reserved_on and self.pool.workers[state.reserved_on].alive:
            self.pool.send(state.reserved_on, Release(request_id, written=state.targeted))
        if state.handle is not None:
            state.handle.discard()

    def fail(self, request_id: str, error: str) -> None:
        self._deliver(TokenEvent.end(request_id, FinishReason.ERROR, error))

    def fail_all(self, error: str) -> None:
        """End every open request (the cluster is stopping) and free every KV still in flight."""
        for request_id in list(self.live):
            self.fail(request_id, error)

    def _worker_died(self, name: str, error: str) -> None:
        self.pool.died(name, error)
        for request_id in [r for r, state in self.live.items() if state.on(name)]:
            self.fail(request_id, f"worker {name} failed: {error}")

    # ---- state -------------------------------------------------------------------------------------

    def status(self) -> list[WorkerStatus]:
        return [WorkerStatus(name, w.spec.role, w.process.pid, w.alive, w.device, w.detail, self._load[name],
                             self.outstanding(name), w.restarts, w.last_error,
                             tuple(w.spec.engine.cpu_cores or ()))
                for name, w in self.pool.workers.items()]
