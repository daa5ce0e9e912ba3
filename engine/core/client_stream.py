"""What a client knows of one request: when it was sent, when each token arrived, how it ended.
Shared by the in-process streams and the HTTP load generator's, so experiments take either."""
from __future__ import annotations

import threading

from ..metrics import Timing
from .events import FinishReason


class ClientStream:
    def __init__(self, request_id: str, sent: float = 0.0):
        self.request_id = request_id
        self.sent = sent
        self.token_times: list[float] = []   # when each token reached the client
        self.text = ""
        self.finish_reason: FinishReason | str | None = None   # a remote server's own, as sent
        self.error: str | None = None
        self._finished = threading.Event()

    @property
    def done(self) -> bool:
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the request ends (True) or the timeout passes (False)."""
        return self._finished.wait(timeout)

    def result(self, timeout: float | None = None) -> str:
        """Wait for the end; the whole text. Raises TimeoutError if it does not end in time."""
        if not self._finished.wait(timeout):
            raise TimeoutError(f"request {self.request_id} did not finish within {timeout} s")
        return self.text

    @property
    def timing(self) -> Timing:
        ended_well = self.error is None and self.finish_reason != FinishReason.ABORT
        return Timing(self.sent, list(self.token_times), ok=ended_well)
