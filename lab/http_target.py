"""Measure any OpenAI-compatible server (ours, vLLM, SGLang, Dynamo) from the client side.

`HttpTarget(base_url).submit(prompt, params)` returns at once with a stream object that a
background thread fills as server-sent events arrive; every token is stamped on arrival, as
vLLM's benchmark client does. It is a lab.target.Target, as the local cluster is, so the same
experiments run against a local engine or a real cluster.
"""
from __future__ import annotations

import json
import threading
import time

import httpx

from engine.cluster.records import TransferRecord, WorkerStatus
from engine.core.client_stream import ClientStream
from engine.core.config import SamplingParams
from engine.core.events import FinishReason


class HttpStream(ClientStream):
    def __init__(self, request_id: str):
        super().__init__(request_id)
        self.usage: dict | None = None
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()


class HttpTarget:
    note = ""

    def __init__(self, base_url: str, model: str | None = None, api_key: str = "EMPTY", timeout_s: float = 600.0):
        self.base_url = base_url.rstrip("/")
        self.client = httpx.Client(base_url=self.base_url, timeout=httpx.Timeout(timeout_s, connect=10.0),
                                   headers={"Authorization": f"Bearer {api_key}"},
                                   limits=httpx.Limits(max_connections=512, max_keepalive_connections=64))
        self.model = model or self._first_model()
        self._count = 0
        self._lock = threading.Lock()

    def _first_model(self) -> str:
        try:
            response = self.client.get("/v1/models")
            response.raise_for_status()
            return response.json()["data"][0]["id"]
        except (httpx.HTTPError, KeyError, IndexError) as exc:
            raise ConnectionError(f"cannot list models at {self.base_url}/v1/models: {exc}") from exc

    def count_tokens(self, prompt: str | list[dict]) -> int:
        """The server's own count where it offers /tokenize (vLLM and ours do); else ~4 chars a token."""
        body = {"prompt": prompt} if isinstance(prompt, str) else {"messages": prompt}
        try:
            response = self.client.post("/tokenize", json={"model": self.model, **body})
            if response.status_code == 200:
                return int(response.json()["count"])
        except httpx.HTTPError:
            pass
        text = prompt if isinstance(prompt, str) else "".join(m["content"] for m in prompt)
        return len(text) // 4

    def status(self) -> list[WorkerStatus]:
        return []   # a remote server's workers are its own business

    def finished_transfers(self) -> list[TransferRecord]:
        return []

    def stop(self) -> None:
        self.client.close()

    def submit(self, prompt, params: SamplingParams) -> HttpStream:
        with self._lock:
            self._count += 1
            stream = HttpStream(f"http-{self._count}")
        body = {"model": self.model, "max_tokens": params.max_tokens, "temperature": params.temperature,
                "top_p": params.top_p, "stream": True, "stream_options": {"include_usage": True},
                "ignore_eos": params.ignore_eos, "min_tokens": params.min_tokens}
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = params.stop
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], dict):
            path, body["messages"] = "/v1/chat/completions", prompt
        else:
            path, body["prompt"] = "/v1/completions", prompt
        stream.sent = time.perf_counter()
        threading.Thread(target=self._run, args=(stream, path, body), daemon=True).start()
        return stream

    def _run(self, stream: HttpStream, path: str, body: dict) -> None:
        try:
            with self.client.stream("POST", path, json=body) as response:
                if response.status_code != 200:
                    response.read()
                    stream.error = _error_message(response)
                    stream.finish_reason = FinishReason.ERROR
                    return
                for line in response.iter_lines():
                    if stream._cancelled.is_set():
                        stream.finish_reason = FinishReason.ABORT
                        return  # closing the connection makes the server drop the request
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    self._on_chunk(stream, json.loads(line[6:]), time.perf_counter())
        except (httpx.HTTPError, json.JSONDecodeError) as exc:
            stream.error, stream.finish_reason = f"{type(exc).__name__}: {exc}", FinishReason.ERROR
        finally:
            stream._finished.set()

    @staticmethod
    def _on_chunk(stream: HttpStream, chunk: dict, now: float) -> None:
        if "error" in chunk:
            stream.error, stream.finish_reason = chunk["error"].get("message", "error"), FinishReason.ERROR
            return
        if chunk.get("usage"):
            stream.usage = chunk["usage"]
        for choice in chunk.get("choices", []):
            delta = choice.get("delta") or {}
            text = choice.get("text") if "text" in choice else delta.get("content")
            finish = choice.get("finish_reason")
            role_preamble = "role" in delta and not text and not stream.token_times and finish is None
            # Servers stream one chunk per token (vLLM and ours), also for a token with no text yet,
            # and put finish_reason on the last token's chunk: every chunk but a chat's opening
            # role-only one is a token, as vLLM's benchmark client counts them.
            if not role_preamble:
                stream.token_times.append(now)
                stream.text += text or ""
            if finish:
                stream.finish_reason = finish


def _error_message(response: httpx.Response) -> str:
    try:
        return f"HTTP {response.status_code}: {response.json()['error']['message']}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"
