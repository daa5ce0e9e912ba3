"""Run an engine on its own thread; any thread submits requests and reads their token streams.

Other threads never touch the engine: they queue actions that the engine's thread runs between steps.
The engine is also built on that thread. On a small CPU this matters: each thread that runs PyTorch's
OpenMP code keeps its own pool of worker threads, and once the pools outnumber the cores libgomp stops
spinning between parallel regions (its throttled spin, config/linux/wait.h), which made a batch-6 step
take 61-70 ms instead of 34-39 ms on 2 cores when one thread built the engine and another stepped it.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from .config import SamplingParams
from .events import FinishReason, TokenEvent
from .inbox import drain
from .llm_engine import LLMEngine
from .request_stream import RequestStream

IDLE_WAIT_S = 0.5   # an idle loop waits this long for an action before looking again


class EngineLoop:
    def __init__(self, build: Callable[[], LLMEngine], name: str = "engine"):
        """`build` makes the engine, on the loop's own thread; `engine` waits for it."""
        self._inbox: queue.Queue[Callable[[], None]] = queue.Queue()
        self._streams: dict[str, RequestStream] = {}
        self._stopped = threading.Event()
        self._built = threading.Event()
        self._engine: LLMEngine | None = None
        self._build_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(build,), name=f"engine-loop-{name}", daemon=True)
        self._thread.start()

    @property
    def engine(self) -> LLMEngine:
        """The engine, once built (a model's first load takes a while); raises what building it raised."""
        self._built.wait()
        if self._engine is None:
            raise RuntimeError(f"the engine could not be built: {self._build_error}") from self._build_error
        return self._engine

    def submit(self, prompt, params: SamplingParams | None = None, request_id: str | None = None) -> RequestStream:
        """Validates here, in the caller's thread: a bad request raises RequestError at once."""
        engine = self.engine
        params = params or SamplingParams()
        ids = engine.encode(prompt)
        engine.check_length(len(ids), params)
        sent = time.perf_counter()
        request_id = request_id or engine.new_request_id()
        stream = RequestStream(request_id, sent, self.abort, len(ids))
        self._streams[request_id] = stream
        self._inbox.put(lambda: self._add(ids, params, request_id, sent))
        return stream

    def abort(self, request_id: str) -> None:
        self._inbox.put(lambda: self._abort(request_id))

    def stop(self, timeout: float = 10.0) -> None:
        self._stopped.set()
        self._inbox.put(lambda: None)   # wake the thread if it waits for work
        self._thread.join(timeout)

    def _run(self, build: Callable[[], LLMEngine]) -> None:
        try:
            self._engine = build()
        except BaseException as exc:  # the callers see it through `engine`
            self._build_error = exc
            return
        finally:
            self._built.set()
        engine = self._engine
        while not self._stopped.is_set():
            for action in drain(self._inbox, wait_s=0.0 if engine.has_work else IDLE_WAIT_S):
                action()
            if self._stopped.is_set():
                break
            try:
                events = engine.step()
            except Exception as exc:  # a broken step fails its requests; the loop keeps serving
                events = engine.fail_all(f"engine step failed: {exc}")
            self._dispatch(events)
        self._dispatch(engine.fail_all("engine stopped"))

    def _add(self, ids: list[int], params: SamplingParams, request_id: str, sent: float) -> None:
        try:
            self._engine.admit(ids, params, request_id=request_id, arrival=sent)   # checked in submit()
        except ValueError as exc:
            self._dispatch([TokenEvent.end(request_id, FinishReason.ERROR, str(exc))])

    def _abort(self, request_id: str) -> None:
        event = self._engine.abort(request_id)
        if event:
            self._dispatch([event])

    def _dispatch(self, events: list[TokenEvent]) -> None:
        for event in events:
            stream = self._streams.get(event.request_id)
            if stream is None:
                continue
            stream.deliver(event)
            if event.finish_reason is not None:
                del self._streams[event.request_id]
