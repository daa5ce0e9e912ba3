"""Run an engine on its own thread; any thread submits requests and reads their token streams."""
from __future__ import annotations

import queue
import threading
import time

from .config import SamplingParams
from .engine import LLMEngine, TokenEvent
from .request_stream import RequestStream


class EngineLoop:
    def __init__(self, engine: LLMEngine):
        self.engine = engine
        self._inbox: queue.Queue[tuple] = queue.Queue()
        self._streams: dict[str, RequestStream] = {}
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"engine-loop-{engine.name}", daemon=True)
        self._thread.start()

    def submit(self, prompt, params: SamplingParams | None = None, request_id: str | None = None) -> RequestStream:
        """Validates here, in the caller's thread: a bad request raises RequestError at once."""
        params = params or SamplingParams()
        ids = self.engine.encode(prompt)
        self.engine.check_length(len(ids), params)
        sent = time.perf_counter()
        request_id = request_id or self.engine.new_request_id()
        stream = RequestStream(request_id, sent, self.abort, len(ids))
        self._streams[request_id] = stream
        self._inbox.put(("add", ids, params, request_id, sent))
        return stream

    def abort(self, request_id: str) -> None:
        self._inbox.put(("abort", request_id))

    def stop(self, timeout: float = 10.0) -> None:
        self._stopped.set()
        self._inbox.put(("wake",))
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._drain_inbox(block=not self.engine.has_work)
            if self._stopped.is_set():
                break
            try:
                events = self.engine.step()
            except Exception as exc:  # a broken step fails its requests; the loop keeps serving
                events = self.engine.fail_all(f"engine step failed: {exc}")
            self._dispatch(events)
        self._dispatch(self.engine.fail_all("engine stopped"))

    def _drain_inbox(self, block: bool) -> None:
        try:
            item = self._inbox.get(timeout=0.5) if block else self._inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            self._handle(item)
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return

    def _handle(self, item: tuple) -> None:
        if item[0] == "add":
            _, ids, params, request_id, sent = item
            try:
                self.engine.add_request(ids, params, request_id=request_id, arrival=sent)
            except ValueError as exc:
                self._dispatch([TokenEvent(request_id, None, "", time.perf_counter(), "error", str(exc))])
        elif item[0] == "abort":
            event = self.engine.abort(item[1])
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
