"""An OpenAI-compatible HTTP server over a Cluster (FastAPI + uvicorn).

Streams are read through asyncio queues that the router's thread feeds, so the event loop never
blocks and no thread is held per stream; a client that disconnects cancels its request, which frees its KV blocks.
"""
# No `from __future__ import annotations`: the endpoints' body types are made in create_app, and FastAPI
# resolves string annotations in the module's globals, where those are not.
import asyncio
import json
from dataclasses import asdict

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..cluster.cluster import Cluster, ClusterError
from ..core.config import RequestError
from ..core.events import FinishReason
from ..core.request_stream import RequestStream
from . import openai_api as api
from .api_key import ApiKey
from .body_limit import BodyLimit
from .logprobs import chat_logprobs, completion_logprobs
from .prometheus_metrics import ServerMetrics

MAX_BODY_BYTES = 4 * 2 ** 20   # a 128k-token prompt is well under 1 MiB as text or as token ids
DISCONNECT_POLL_S = 0.25   # how often a non-streamed request checks that its client is still there
SHUTDOWN_GRACE_S = 5   # open streams get this long to finish when the server is told to stop


def create_app(cluster: Cluster, max_active_requests: int = 256, max_body_bytes: int = MAX_BODY_BYTES,
               api_key: str | None = None) -> FastAPI:
    app = FastAPI(title="pd-lab engine", version="0.1.0")
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    if api_key is not None:
        app.add_middleware(ApiKey, key=api_key)   # added last: runs first, before a body is read
    model = cluster.model_name
    config = cluster.specs[0].engine
    metrics = ServerMetrics(model, config.block_size, config.num_blocks)
    # The request bodies with this server's limits (vocabulary, context), so the schema states them.
    Completion, Chat, Tokenize = api.for_server(cluster.prompts.vocab_size,
                                                min(cluster.prompts.max_context, cluster.kv_capacity))
    bodies = {"/v1/completions": Completion, "/v1/chat/completions": Chat, "/tokenize": Tokenize}
    key = (401,) if api_key is not None else ()   # only /v1 asks for the key (api_key.py)
    counted_transfers: set[str] = set()
    read_from = {"requests": 0, "steps": 0}   # positions in the cluster's histories already counted

    def fail(status: int, message: str, kind: str = "invalid_request_error", headers: dict | None = None,
             param: str | None = None):
        return JSONResponse(api.error_body(message, kind, status, param), status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0]
        if first["type"] == "json_invalid":
            return fail(400, f"request body is not valid JSON: {first['ctx']['error']} (at character "
                             f"{first['loc'][-1]})")
        body = bodies.get(request.url.path)
        if body is not None and all(e["loc"][:1] == ("body",) for e in errors):
            problems, param = api.explain(body, errors, exc.body)
            return fail(400, f"invalid request: {problems}", param=param)
        cause = first.get("ctx", {}).get("error")
        param = getattr(cause, "param", None) or ".".join(str(p) for p in first["loc"][1:]) or None
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: "
                             f"{e['msg'].removeprefix('Value error, ')}" for e in errors)
        return fail(400, f"invalid request: {problems}", param=param)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        """FastAPI's own refusals (an unreadable body, an unknown path or method) in OpenAI's shape too."""
        message = {400: "request body is not valid JSON in UTF-8",
                   404: f"no such endpoint: {request.url.path}",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return fail(exc.status_code, message, kind, headers=getattr(exc, "headers", None))

    @app.get("/health", responses=api.error_responses(503))
    async def health():
        down = [w for w in cluster.status() if not w.alive]
        if down:
            return fail(503, "; ".join(f"worker {w.name} is {w.state}" for w in down), "service_unavailable",
                        headers={"Retry-After": "5"})
        return {"status": "ok"}

    @app.get("/v1/models", responses=api.error_responses(*key))
    async def models():
        return {"object": "list", "data": [{"id": model, "object": "model", "created": 0, "owned_by": "pd-lab",
                                            "max_model_len": cluster.prompts.max_context}]}

    @app.post("/tokenize", responses=api.error_responses(400, 413))
    async def tokenize(body: Tokenize):
        try:
            ids = await asyncio.to_thread(cluster.prompts.encode, body.to_encode)   # off the event loop
        except RequestError as exc:
            return fail(400, str(exc))
        return {"count": len(ids), "tokens": ids, "max_model_len": cluster.prompts.max_context}

    @app.get("/metrics", response_class=PrometheusText)
    async def prometheus():
        new = [t for t in cluster.finished_transfers() if t.request_id not in counted_transfers]
        counted_transfers.update(t.request_id for t in new)
        records, read_from["requests"] = cluster.requests.since(read_from["requests"])
        steps, read_from["steps"] = cluster.steps.since(read_from["steps"])
        metrics.update_state(cluster.status(), new, records, steps)
        return PrometheusText(metrics.render())

    @app.get("/events", responses=api.error_responses(400))
    async def events(since_step: int = 0, since_request: int = 0):
        """Server-side detail for the lab: per-step and per-request records, KV transfers."""
        steps, next_step = cluster.steps.since(since_step)
        requests, next_request = cluster.requests.since(since_request)
        transfers = [{**asdict(t), "total_seconds": t.total_seconds} for t in cluster.finished_transfers()]
        return {"steps": [asdict(s) for s in steps], "requests": [asdict(r) for r in requests], "transfers": transfers,
                "next_step": next_step, "next_request": next_request,
                "workers": {w.name: asdict(w) for w in cluster.status()}}

    def submit(body: api._Common, prompt, choice: int) -> RequestStream:
        """Tokenize, then submit; without max_tokens the answer may use the rest of the context, as in vLLM."""
        ids = cluster.prompts.encode(prompt)
        max_tokens = body.asked_max_tokens
        if max_tokens is None:
            max_tokens = max(1, cluster.room_for_answer(len(ids)))
        return cluster.submit(ids, body.sampling(max_tokens, choice))

    async def start(body: api._Common, prompts: list) -> list[RequestStream] | JSONResponse:
        """One stream per choice: n for each prompt, in order. One refused prompt refuses them all, and
        nothing is left running."""
        if body.model not in (None, model):
            return fail(404, f"model {body.model!r} is not served here; this server serves {model!r}",
                        "not_found_error")
        if cluster.active_requests + len(prompts) * body.n > max_active_requests:
            return fail(503, f"server is at its limit of {max_active_requests} active requests; retry shortly",
                        "service_unavailable", headers={"Retry-After": "1"})
        streams: list[RequestStream] = []
        try:
            for i, prompt in enumerate(prompts):
                where = f"prompt {i} of the batch: " if len(prompts) > 1 else ""
                for choice in range(body.n):
                    try:
                        # Tokenizing a long prompt takes a while: in a thread, so others are served meanwhile.
                        streams.append(await asyncio.to_thread(submit, body, prompt, choice))
                    except RequestError as exc:
                        return fail(400, f"{where}{exc}")
                    except ClusterError as exc:
                        return fail(503, str(exc), "service_unavailable", headers={"Retry-After": "5"})
        finally:
            if len(streams) < len(prompts) * body.n:
                for started in streams:
                    started.cancel()
        return streams

    def prompt_tokens(streams: list[RequestStream], n: int) -> int:
        return sum(s.prompt_tokens for s in streams[::n])   # a prompt counts once, whatever its n

    def names(ids: list[int]) -> list[str]:
        return cluster.prompts.token_strings(ids)

    event = {"type": "object", "required": ["data"], "properties": {"data": {
        "type": "string", "description": "a chunk of the answer as JSON, an error as JSON, or [DONE] last"}}}
    generation = {200: {"content": {"text/event-stream": {"schema": event}},   # OpenAPI 3.1: the schema of one event
                        "description": "the answer; with stream: true, server-sent events"},
                  **api.error_responses(400, *key, 404, 413, 500, 503)}

    @app.post("/v1/completions", responses=generation)
    async def completions(body: Completion, request: Request):
        prompts = body.prompts
        streams = await start(body, prompts)
        if isinstance(streams, JSONResponse):
            return streams
        echoes = [(p if isinstance(p, str) else cluster.prompts.decode(p)) if body.echo else ""
                  for p in prompts for _ in range(body.n)]
        rid = api.new_id("cmpl")
        if body.stream:
            offsets = [0] * len(streams)   # where each choice's next token starts in its text

            def chunk(index: int, event) -> dict:
                lp = None
                if event.logprob is not None:
                    lp = completion_logprobs([event.token_id], [event.logprob], names, offsets[index])
                    offsets[index] += len(lp["tokens"][0])
                return api.completion_chunk(rid, model, event.text, event.finish_reason, index, lp)
            return sse(streams, body.n, body.include_usage, chunk,
                       lambda n: api.usage_chunk(rid, model, "text_completion", prompt_tokens(streams, body.n), n),
                       first=[api.completion_chunk(rid, model, e, None, i) for i, e in enumerate(echoes) if e])
        await asyncio.gather(*(until_done(s, request) for s in streams))
        return finished_or_error(streams, body.n, lambda: api.completion_body(
            rid, model, [(e + s.text, s.finish_reason, completion_logprobs(s.token_ids, s.logprobs, names)
                          if body.logprobs is not None else None) for e, s in zip(echoes, streams)],
            prompt_tokens(streams, body.n), sum(len(s.token_ids) for s in streams)))

    @app.post("/v1/chat/completions", responses=generation)
    async def chat(body: Chat, request: Request):
        streams = await start(body, [[m.as_template_input() for m in body.messages]])
        if isinstance(streams, JSONResponse):
            return streams
        rid = api.new_id("chatcmpl")
        if body.stream:
            started: set[int] = set()

            def chunk(index: int, event) -> dict:
                text = event.text
                delta = {"content": text} if text else {}
                if index not in started:   # a choice's first chunk names the role
                    started.add(index)
                    delta = {"role": "assistant", "content": text}
                lp = chat_logprobs([event.token_id], [event.logprob], names) if event.logprob is not None else None
                return api.chat_chunk(rid, model, delta, event.finish_reason, index, lp)
            return sse(streams, body.n, body.include_usage, chunk,
                       lambda n: api.usage_chunk(rid, model, "chat.completion.chunk",
                                                 prompt_tokens(streams, body.n), n))
        await asyncio.gather(*(until_done(s, request) for s in streams))
        return finished_or_error(streams, body.n, lambda: api.chat_body(
            rid, model, [(s.text, s.finish_reason, chat_logprobs(s.token_ids, s.logprobs, names)
                          if body.logprobs else None) for s in streams],
            prompt_tokens(streams, body.n), sum(len(s.token_ids) for s in streams)))

    async def until_done(stream: RequestStream, request: Request) -> None:
        """Wait for a non-streamed request to end; if its client leaves first, cancel it (frees its KV)."""
        async def drain():
            async for _ in stream.aevents():
                pass
        done = asyncio.ensure_future(drain())
        while not done.done():
            await asyncio.wait({done}, timeout=DISCONNECT_POLL_S)
            if not done.done() and await request.is_disconnected():
                stream.cancel()
                await done
        await done

    def observe(streams: list[RequestStream], n: int) -> None:
        """The requests that ended, each, and each prompt's choices together (n per prompt)."""
        for stream in streams:
            if stream.done:
                metrics.observe_request(stream.prompt_tokens, stream.timing, stream.finish_reason)
        for first in range(0, len(streams), n):
            ended = [len(s.token_ids) for s in streams[first:first + n] if s.done]
            if ended:
                metrics.observe_choices(ended)

    def finished_or_error(streams: list[RequestStream], n: int, body):
        observe(streams, n)
        failed = next((s for s in streams if s.finish_reason == FinishReason.ERROR), None)
        if failed is not None:
            return fail(500, failed.error or "request failed", "server_error")
        return body()

    def sse(streams: list[RequestStream], n: int, include_usage: bool, chunk, usage,
            first: list[dict] | None = None) -> StreamingResponse:
        """The streams' events as server-sent events, interleaved as they come: `chunk(index, event)`
        makes each stream's chunk; `first` goes out before them (an echoed prompt)."""
        async def body():
            arrived: asyncio.Queue = asyncio.Queue()

            async def pump(index: int, stream: RequestStream) -> None:
                try:
                    async for event in stream.aevents():
                        arrived.put_nowait((index, event))
                finally:
                    arrived.put_nowait((index, None))   # this stream has ended
            pumps = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
            try:
                for payload in first or []:
                    yield _sse(payload)
                running = len(streams)
                while running:
                    index, event = await arrived.get()
                    if event is None:
                        running -= 1
                    elif event.finish_reason == FinishReason.ERROR:
                        yield _sse(api.error_body(event.error or "request failed", "server_error", 500))
                        break
                    elif event.token_id is not None or event.finish_reason is not None:
                        # the last token's chunk carries the finish reason; an abort ends without a token
                        yield _sse(chunk(index, event))
                if include_usage:
                    yield _sse(usage(sum(len(s.token_ids) for s in streams)))
                yield "data: [DONE]\n\n"
            finally:
                for task in pumps:
                    task.cancel()
                for stream in streams:
                    if not stream.done:
                        stream.cancel()  # the client went away (or a sibling failed): free the request and its KV
                observe(streams, n)
        return StreamingResponse(body(), media_type="text/event-stream")

    published = app.openapi

    def openapi() -> dict:
        """FastAPI's schema without its 422 answers (a validation error is a 400 here: invalid_body), and
        with the request bodies as pydantic states them: FastAPI keeps bounds as floats, and seed's
        maximum, 2**64-1, is not one."""
        if app.openapi_schema is None:
            schema = published()
            for operation in (op for path in schema["paths"].values() for op in path.values()):
                operation["responses"].pop("422", None)
            schemas = schema["components"]["schemas"]
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            for body in bodies.values():
                exact = body.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(exact.pop("$defs", {}))
                schemas[body.__name__] = exact
        return app.openapi_schema
    app.openapi = openapi
    return app


class PrometheusText(Response):
    media_type = "text/plain; version=0.0.4"   # Prometheus' text exposition format


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def serve(cluster: Cluster, host: str = "127.0.0.1", port: int = 8000, max_body_bytes: int = MAX_BODY_BYTES,
          api_key: str | None = None) -> None:
    """Serve until SIGTERM or SIGINT; open streams get SHUTDOWN_GRACE_S to finish, then are cut."""
    config = uvicorn.Config(create_app(cluster, max_body_bytes=max_body_bytes, api_key=api_key), host=host, port=port,
                            log_level="info", timeout_graceful_shutdown=SHUTDOWN_GRACE_S)
    uvicorn.Server(config).run()
