"""A cluster on one machine: worker processes for a topology (the pool), a router between them,
and a thread that feeds the router what the workers report. Its submit() has the same shape as
the single-process EngineLoop's, so the lab and the HTTP server take either."""
from __future__ import annotations

import atexit
import itertools
import threading
import time

from transformers import AutoConfig, AutoTokenizer

from ..core.config import MAX_TOKENS_LIMIT, EngineConfig, SamplingParams
from ..core.model_loader import BUNDLED, BUNDLED_NAME, bundled_model_folder
from ..core.prompts import PromptEncoder
from ..core.request_stream import RequestStream
from ..core.sequence import RequestRecord, StepRecord
from .history import History
from .messages import WorkerFailed
from .placement import WorkerSpec, plan_workers
from .prefix_affinity import PrefixAffinity
from .records import TransferRecord, WorkerStatus
from .router import Router
from .topology import Topology
from .transports import TransportSettings
from .worker_pool import ClusterError, WorkerPool

__all__ = ["Cluster", "ClusterError"]

STOP_GRACE_S = 10.0   # how long stop() lets workers finish before it ends them


class Cluster:
    def __init__(self, topology: Topology | None = None, engine: EngineConfig | None = None,
                 transport: TransportSettings | str = "shm", conditional_threshold: int | None = None,
                 cores: list[int] | None = None, decode_chunk_size: int = 32, cache_aware: bool = False):
        """`cache_aware`: route a prompt to the worker likely to hold its prefix (prefix_affinity.py)."""
        self.topology = topology or Topology()
        base = engine or EngineConfig()
        self.transport = transport if isinstance(transport, TransportSettings) else TransportSettings(transport)
        if conditional_threshold is not None and conditional_threshold < 0:
            raise ValueError(f"conditional_threshold must be >= 0 tokens, got {conditional_threshold}")
        specs, self.note = plan_workers(self.topology, base, self.transport, cores, decode_chunk_size)
        self.prompts = _prompt_encoder(base.model)
        self.model_name = BUNDLED_NAME if base.model == BUNDLED else base.model
        self.kv_capacity = base.num_blocks * base.block_size
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._stopped = threading.Event()
        self.pool = WorkerPool(specs)
        self.router = Router(self.pool, self.topology, self.transport, conditional_threshold,
                             PrefixAffinity(base.block_size) if cache_aware else None)
        self._thread = threading.Thread(target=self._route_events, name="router", daemon=True)
        self._thread.start()
        atexit.register(self.stop)   # an owner that never calls stop() (a script, Streamlit) still stops us

    # ---- requests ----------------------------------------------------------------------------

    def submit(self, prompt, params: SamplingParams | None = None, request_id: str | None = None) -> RequestStream:
        """The request's front door: encoded (unless `self.prompts` encoded it already) and checked here, in
        the caller's thread (RequestError at once), then routed; the workers trust it."""
        params = params or SamplingParams()
        ids = self.prompts.encode(prompt)
        self.prompts.check_length(len(ids), params, self.kv_capacity)
        if self._stopped.is_set():
            raise ClusterError("the cluster is stopped")
        with self._lock:
            stream = RequestStream(request_id or f"req-{next(self._ids)}", time.perf_counter(), self.abort, len(ids))
            self.router.add(stream, ids, params)
        return stream

    def abort(self, request_id: str) -> None:
        with self._lock:
            self.router.abort(request_id)

    def room_for_answer(self, prompt_tokens: int) -> int:
        """The most tokens an answer to a prompt this long may have: the rest of the context window and
        of one worker's KV cache, at most MAX_TOKENS_LIMIT."""
        return min(MAX_TOKENS_LIMIT, min(self.prompts.max_context, self.kv_capacity) - prompt_tokens)

    def count_tokens(self, prompt) -> int:
        """Tokens of a prompt as the workers will see it (the lab sizes its long prompts with this)."""
        return len(self.prompts.encode(prompt))

    # ---- what workers report -----------------------------------------------------------------

    def _route_events(self) -> None:
        while not self._stopped.is_set():
            messages = self.pool.receive(timeout=0.2)
            with self._lock:
                for message in messages:
                    self.router.handle(message)
                self.pool.restart_due()

    def _drain(self) -> None:
        """What stopped workers sent last (their final records), without their exit notices."""
        while messages := [m for m in self.pool.receive(timeout=0) if not isinstance(m, WorkerFailed)]:
            with self._lock:
                for message in messages:
                    self.router.handle(message)

    # ---- state for dashboards, the server and tests ----------------------------------------------

    def status(self) -> list[WorkerStatus]:
        with self._lock:
            return self.router.status()

    @property
    def specs(self) -> list[WorkerSpec]:
        """What each worker was started with: its role, device, cores."""
        return [w.spec for w in self.pool.workers.values()]

    @property
    def active_requests(self) -> int:
        return len(self.router.live)

    @property
    def requests(self) -> History[RequestRecord]:
        """The most recent finished requests (engine/cluster/history.py says how many)."""
        return self.router.requests

    @property
    def steps(self) -> History[StepRecord]:
        """The most recent engine steps of every worker."""
        return self.router.steps

    @property
    def transfers(self) -> dict[str, TransferRecord]:
        return self.router.transfers

    def finished_transfers(self) -> list[TransferRecord]:
        """KV transfers whose KV has landed on the decode side, in arrival order."""
        return [t for t in list(self.router.transfers.values()) if t.finished_at]

    # ---- lifecycle ---------------------------------------------------------------------------

    def stop(self, timeout: float = STOP_GRACE_S) -> None:
        """Ask the workers to finish, wait up to `timeout` s, then end the rest: bounded, whatever they do."""
        if self._stopped.is_set():
            return
        atexit.unregister(self.stop)
        self.pool.stop(timeout)
        self._stopped.set()
        self._thread.join(5)
        self.pool.kill_all()
        self._drain()
        with self._lock:
            self.router.fail_all("cluster stopped")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _prompt_encoder(model: str) -> PromptEncoder:
    """The router validates prompts itself, with the tokenizer alone (no weights in this process)."""
    source = bundled_model_folder() if model == BUNDLED else model
    config = AutoConfig.from_pretrained(source)
    return PromptEncoder(AutoTokenizer.from_pretrained(source), config.vocab_size,
                         int(getattr(config, "max_position_embeddings", 2048)))
