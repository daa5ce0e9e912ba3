"""Refuse /v1 requests without the server's API key (`serve --api-key`), as vLLM does: the client sends
`Authorization: Bearer <key>`, which the openai package does with its `api_key`. /health and /metrics
stay open for load balancers and Prometheus."""
from __future__ import annotations

import hmac

from . import openai_api as api

PROTECTED = "/v1"


class ApiKey:
    """ASGI middleware; compares in constant time, so the key cannot be guessed byte by byte."""

    def __init__(self, app, key: str):
        if not key:
            raise ValueError("an API key must not be empty")
        self.app = app
        self.expected = f"Bearer {key}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(PROTECTED):
            return await self.app(scope, receive, send)
        sent = dict(scope["headers"]).get(b"authorization", b"")
        if hmac.compare_digest(sent, self.expected):
            return await self.app(scope, receive, send)
        reason = "no API key was sent" if not sent else "the API key is wrong"
        await api.send_error(send, 401, f"{reason}: send the server's key as 'Authorization: Bearer <key>' (the "
                             "openai package's api_key)", "authentication_error", ((b"www-authenticate", b"Bearer"),))
