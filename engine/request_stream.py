"""A client's view of one request: its events in order, stamped when they reach the client."""
from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

from .engine import TokenEvent
from .metrics import Timing


class RequestStream:
    """Iteration yields the request's events and ends after the finishing one."""

    def __init__(self, request_id: str, sent: float, abort: Callable[[str], None], prompt_tokens: int = 0):
        self.request_id = request_id
        self.sent = sent
        self.prompt_tokens = prompt_tokens
        self.token_times: list[float] = []   # when each token reached the client
        self.token_ids: list[int] = []
        self.text = ""
        self.finish_reason: str | None = None
        self.error: str | None = None
        self._events: queue.Queue[TokenEvent] = queue.Queue()
        self._abort = abort
        self._finished = threading.Event()
        self._lock = threading.Lock()
        self._history: list[TokenEvent] = []
        self._async_listener: tuple[asyncio.AbstractEventLoop, asyncio.Queue] | None = None

    def deliver(self, event: TokenEvent) -> None:
        """Called by the dispatcher thread as each event arrives."""
        if event.token_id is not None:
            self.token_times.append(time.perf_counter())
            self.token_ids.append(event.token_id)
            self.text += event.text
        if event.finish_reason is not None:
            self.finish_reason, self.error = event.finish_reason, event.error
            self._finished.set()
        self._events.put(event)
        with self._lock:
            self._history.append(event)
            listener = self._async_listener
        if listener:
            loop, events = listener
            loop.call_soon_threadsafe(events.put_nowait, event)

    async def aevents(self) -> AsyncIterator[TokenEvent]:
        """The same events for asyncio code (the HTTP server), without a thread per stream."""
        events: asyncio.Queue[TokenEvent] = asyncio.Queue()
        with self._lock:
            backlog = list(self._history)
            self._async_listener = (asyncio.get_running_loop(), events)
        for event in backlog:
            yield event
            if event.finish_reason is not None:
                return
        while True:
            event = await events.get()
            yield event
            if event.finish_reason is not None:
                return

    def __iter__(self) -> Iterator[TokenEvent]:
        while True:
            event = self._events.get()
            yield event
            if event.finish_reason is not None:
                return

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the request ends (True) or the timeout passes (False)."""
        return self._finished.wait(timeout)

    def result(self, timeout: float | None = None) -> str:
        """Wait for the end; the whole text. Raises TimeoutError if it does not end in time."""
        if not self._finished.wait(timeout):
            raise TimeoutError(f"request {self.request_id} did not finish within {timeout} s")
        return self.text

    def cancel(self) -> None:
        self._abort(self.request_id)

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def timing(self) -> Timing:
        return Timing(self.sent, list(self.token_times), ok=self.error is None and self.finish_reason != "abort")
