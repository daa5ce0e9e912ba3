"""Refuse a request body over a size limit with 413 before the app reads it (a client that sends no
Content-Length is counted as its body arrives)."""
from __future__ import annotations

from . import openai_api as api


class BodyLimit:
    """ASGI middleware: reads the body itself, up to `limit` bytes, then hands it to the app."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send)
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > self.limit:
                return await self._refuse(send)
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()
        await self.app(scope, replay, send)

    async def _refuse(self, send) -> None:
        await api.send_error(send, 413, f"request body is larger than this server's limit of {self.limit} bytes; "
                             "send a shorter prompt", "invalid_request_error")
