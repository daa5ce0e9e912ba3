"""A client's view of one request: its events in order, stamped when they reach the client."""
from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

from .client_stream import ClientStream
from .events import TokenEvent, TokenLogprob


class RequestStream(ClientStream):
    """Iteration yields the request's events and ends after the finishing one."""

    def __init__(self, request_id: str, sent: float, abort: Callable[[str], None], prompt_tokens: int = 0):
        super().__init__(request_id, sent)
        self.prompt_tokens = prompt_tokens
        self.token_ids: list[int] = []
        self.logprobs: list[TokenLogprob] = []   # one per token, if the request asked for them
        self._events: queue.Queue[TokenEvent] = queue.Queue()
        self._abort = abort
        self._lock = threading.Lock()
        self._history: list[TokenEvent] = []
        self._async_listener: tuple[asyncio.AbstractEventLoop, asyncio.Queue] | None = None

    def deliver(self, event: TokenEvent) -> None:
        """Called by the dispatcher thread as each event arrives."""
        if event.token_id is not None:
            self.token_times.append(time.perf_counter())
            self.token_ids.append(event.token_id)
            if event.logprob is not None:
                self.logprobs.append(event.logprob)
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

    def cancel(self) -> None:
        self._abort(self.request_id)
