"""OpenAI-compatible request bodies (with vLLM's extensions) and response payloads."""
from __future__ import annotations

import json
import time
import uuid
from typing import Annotated, ClassVar, Literal

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictFloat,
                      StrictInt, StrictStr, create_model, model_validator)

from ..core.config import MAX_LOGPROBS, MAX_TOKENS_LIMIT, SEED_RANGE, SamplingParams


class StreamOptions(BaseModel):
    include_usage: StrictBool = False


# Parameters of the OpenAI API (and vLLM's) that this engine does not implement, with the value that
# asks for nothing: any other value is refused by name instead of silently ignored.
NOT_IMPLEMENTED = {"best_of": 1, "echo": False, "suffix": None, "logit_bias": None, "top_k": -1, "tools": None,
                   "tool_choice": None, "functions": None, "response_format": None}
MAX_N = 128   # most choices per prompt (OpenAI's limit for chat)


class ParameterError(ValueError):
    """A request body the server refuses, naming the parameter at fault (OpenAI's error.param)."""
    def __init__(self, param: str, message: str):
        self.param = param
        super().__init__(message)


# The limits below are declared on the fields, so the published schema (/openapi.json) says what is
# accepted; `description` says it in words, and a refusal quotes it (app.py's invalid_body).
def between(default, lo, hi, **kw):
    return Field(default, ge=lo, le=hi, description=f"between {lo} and {hi}", **kw)


def _whole(value):
    return int(value) if type(value) is float and value.is_integer() else value


def integer(lo: int | None = None, hi: int | None = None):
    """An integer as JSON Schema means it: 177.0 is one (schemathesis sends such), a boolean or a string
    is not. The bounds go inside, next to the int, so the schema shows them as minimum and maximum."""
    return Annotated[StrictInt, Field(ge=lo, le=hi), BeforeValidator(_whole)]


# Text that has a non-space character: what the engine's prompt check accepts. Python's regex engine, so
# `\S` means what str.strip() means (Rust's regex counts \x1c-\x1f as non-space).
NON_SPACE = r"\S"
Text = Annotated[StrictStr, Field(min_length=1, pattern=NON_SPACE)]
TokenIds = Annotated[list[integer(0)], Field(min_length=1)]


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore",   # clients send fields that change nothing here (user, ...)
                              regex_engine="python-re")
    model: StrictStr | None = Field(None, description="the served model's id (GET /v1/models); another is 404")
    max_tokens: integer(1, MAX_TOKENS_LIMIT) | None = Field(None, description=f"between 1 and {MAX_TOKENS_LIMIT}")
    max_completion_tokens: integer(1, MAX_TOKENS_LIMIT) | None = Field(
        None, description=f"between 1 and {MAX_TOKENS_LIMIT}")
    n: integer(1, MAX_N) = Field(1, description=f"between 1 and {MAX_N}")   # choices per prompt, each sampled apart
    temperature: StrictFloat = between(1.0, 0, 2)   # strict: a boolean is not a number (an integer is)
    top_p: StrictFloat = Field(1.0, gt=0, le=1, description="in (0, 1]")
    seed: integer(*SEED_RANGE) | None = Field(None, description="an integer from -2**63 to 2**64-1")
    stop: Annotated[StrictStr, Field(min_length=1)] | list[Annotated[StrictStr, Field(min_length=1)]] | None = \
        Field(None, description="a non-empty string or a list of them")
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    presence_penalty: StrictFloat = between(0.0, -2, 2)
    frequency_penalty: StrictFloat = between(0.0, -2, 2)
    repetition_penalty: StrictFloat = Field(1.0, gt=0, description="greater than 0")   # vLLM extension
    ignore_eos: StrictBool = False       # vLLM extension
    min_tokens: integer(0, MAX_TOKENS_LIMIT) = Field(   # vLLM extension
        0, description=f"between 0 and max_tokens (at most {MAX_TOKENS_LIMIT})")

    implemented: ClassVar[frozenset[str]] = frozenset()   # names of NOT_IMPLEMENTED that this endpoint serves

    @model_validator(mode="before")
    @classmethod
    def _refuse_what_is_not_implemented(cls, data):
        if isinstance(data, dict):
            for name, neutral in NOT_IMPLEMENTED.items():
                if name in cls.implemented:
                    continue
                value = data.get(name, neutral)
                if value not in (neutral, None) and not (value is False and neutral is None):
                    raise ParameterError(name, f"parameter {name}={value!r} is not supported by this server (leave "
                                               f"it out, or send {neutral!r}); see the README for what is")
        return data

    @property
    def asked_max_tokens(self) -> int | None:
        """What the client asked for (max_completion_tokens first, as OpenAI's newer name), or None."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @property
    def asked_logprobs(self) -> int | None:
        """Alternatives per token the client asked for (0: only the chosen token's), or None."""
        return None

    def sampling(self, max_tokens: int, choice: int = 0) -> SamplingParams:
        """The parameters of one choice: with a seed, choice k samples with seed + k (as vLLM's n does),
        so the choices differ and each is reproducible."""
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return SamplingParams(max_tokens=max_tokens, temperature=self.temperature, top_p=self.top_p,
                              seed=None if self.seed is None else self.seed + choice, stop=stop,
                              ignore_eos=self.ignore_eos, min_tokens=self.min_tokens,
                              presence_penalty=self.presence_penalty, frequency_penalty=self.frequency_penalty,
                              repetition_penalty=self.repetition_penalty, logprobs=self.asked_logprobs)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(_Common):
    # The schema states _no_prompt_logprobs's rule: not echo and logprobs together.
    model_config = ConfigDict(json_schema_extra={"not": {"required": ["echo", "logprobs"], "properties": {
        "echo": {"const": True}, "logprobs": {"type": "integer"}}}})
    implemented: ClassVar[frozenset[str]] = frozenset({"echo"})
    # One prompt (text or token ids) or a batch of them, as OpenAI's completions API defines it.
    prompt: Text | TokenIds | Annotated[list[Text], Field(min_length=1)] | Annotated[list[TokenIds], Field(
        min_length=1)] = Field(description="text with a non-space character, a list of token ids, or a non-empty "
                                           "batch of either")
    echo: StrictBool = False   # the answer starts with the prompt, as OpenAI's and vLLM's completions do
    logprobs: integer(0, MAX_LOGPROBS) | None = Field(None, description=f"between 0 and {MAX_LOGPROBS}")

    @model_validator(mode="after")
    def _no_prompt_logprobs(self):
        if self.echo and self.logprobs is not None:
            raise ParameterError("logprobs", "logprobs with echo asks for the prompt's log-probabilities, which "
                                             "this server does not compute; send one of the two")
        return self

    @property
    def asked_logprobs(self) -> int | None:
        return self.logprobs

    @property
    def prompts(self) -> list[str | list[int]]:
        """The batch: one entry per prompt, in order (each gives n choices)."""
        p = self.prompt
        if isinstance(p, str) or not p or isinstance(p[0], int):
            return [p]
        return list(p)


class TextPart(BaseModel):
    type: Literal["text"]
    text: StrictStr


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: StrictStr | list[TextPart] | None = None   # text, text parts (vLLM's and guidellm's clients), or none

    def as_template_input(self) -> dict:
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content or [])
        return {"role": self.role, "content": text}


def _some_content(messages: list[ChatMessage]) -> list[ChatMessage]:
    if not any(m.as_template_input()["content"].strip() for m in messages):
        raise ValueError("all chat messages are empty")
    return messages


# A message whose content (text, or one of its text parts) has a non-space character: JSON Schema's
# `contains` says that at least one message must be such, as _some_content checks.
_WITH_CONTENT = {"type": "object", "required": ["content"], "properties": {"content": {"anyOf": [
    {"type": "string", "pattern": NON_SPACE},
    {"type": "array", "contains": {"type": "object", "required": ["text"],
                                   "properties": {"text": {"type": "string", "pattern": NON_SPACE}}}}]}}}
Messages = Annotated[list[ChatMessage], Field(min_length=1, json_schema_extra={"contains": _WITH_CONTENT}),
                     AfterValidator(_some_content)]
MESSAGES = "at least one chat message, one of them with non-space content"


class ChatRequest(_Common):
    # The schema states _top_logprobs_needs_logprobs's rule: no top_logprobs above 0 without logprobs: true.
    model_config = ConfigDict(json_schema_extra={"not": {"required": ["top_logprobs"], "properties": {
        "top_logprobs": {"type": "integer", "minimum": 1}, "logprobs": {"const": False}}}})
    messages: Messages = Field(description=MESSAGES)
    logprobs: StrictBool = False
    top_logprobs: integer(0, MAX_LOGPROBS) | None = Field(None, description=f"between 0 and {MAX_LOGPROBS}")

    @model_validator(mode="after")
    def _top_logprobs_needs_logprobs(self):
        if self.top_logprobs and not self.logprobs:
            raise ParameterError("top_logprobs", "top_logprobs needs logprobs: true")
        return self

    @property
    def asked_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


def _absent() -> None:
    return None


class TokenizeRequest(BaseModel):
    """vLLM's /tokenize: a prompt (text or token ids) or chat messages, not both."""
    model_config = ConfigDict(extra="ignore", regex_engine="python-re",
                              json_schema_extra={"oneOf": [{"required": ["prompt"]}, {"required": ["messages"]}]})
    # Not nullable: a null would count as sent in the schema's oneOf, so it is refused. (A default_factory,
    # so the schema shows no default of null, which its own type refuses.)
    prompt: Text | TokenIds = Field(default_factory=_absent, description="text with a non-space character, or a "
                                                                         "list of token ids")
    messages: Messages = Field(default_factory=_absent, description=MESSAGES)

    @model_validator(mode="after")
    def _one_of_prompt_or_messages(self):
        if ("prompt" in self.model_fields_set) == ("messages" in self.model_fields_set):
            raise ParameterError("prompt", "send one of prompt (text or token ids) or messages (chat), not both "
                                           "and not neither")
        return self

    @property
    def to_encode(self) -> str | list[int] | list[dict]:
        return self.prompt if self.messages is None else [m.as_template_input() for m in self.messages]


def for_server(vocab_size: int, context: int) -> tuple[type, type, type]:
    """The request models with this server's own limits, so its schema states them: token ids below the
    vocabulary size; a prompt and its answer within `context` tokens (the context window or one worker's
    KV cache, the smaller), so neither alone may take all of it."""
    ids = Annotated[list[integer(0, vocab_size - 1)], Field(min_length=1)]
    prompt_ids = Annotated[list[integer(0, vocab_size - 1)], Field(min_length=1, max_length=context - 1)]
    most = min(MAX_TOKENS_LIMIT, context - 1)
    here = f" (at most {most} on this server: prompt + max_tokens must fit in {context} tokens)" \
        if most < MAX_TOKENS_LIMIT else ""
    answer = {name: (integer(1, most) | None, Field(None, description=f"between 1 and {MAX_TOKENS_LIMIT}{here}"))
              for name in ("max_tokens", "max_completion_tokens")}
    answer["min_tokens"] = (integer(0, most), Field(0, description=f"between 0 and max_tokens (at most {most})"))
    completion = create_model("CompletionRequest", __base__=CompletionRequest, **answer, prompt=(
        Text | prompt_ids | Annotated[list[Text], Field(min_length=1)] | Annotated[list[prompt_ids], Field(
            min_length=1)], Field(description=f"text with a non-space character, a list of at most {context - 1} "
                                              f"token ids from 0 to {vocab_size - 1}, or a non-empty batch of either")))
    chat = create_model("ChatRequest", __base__=ChatRequest, **answer)
    tokenize = create_model("TokenizeRequest", __base__=TokenizeRequest, prompt=(Text | ids, Field(
        default_factory=_absent, description=f"text with a non-space character, or a list of token ids from 0 to "
                                             f"{vocab_size - 1}")))
    return completion, chat, tokenize


_MISSING = object()


def _where(error: dict, body) -> tuple[list, object]:
    """The path of a validation error in the body as sent, and the value there (_MISSING: not sent).
    pydantic's locations also name the branch of a union that failed ('constrained-str', 'list[int]'):
    the path stops at the first such name, so a union's field is judged as a whole."""
    path, value = [], body
    for part in error["loc"][1:]:   # loc[0] is 'body'
        if isinstance(value, dict) and part in value or (isinstance(value, list) and isinstance(part, int)
                                                         and 0 <= part < len(value)):
            path.append(part)
            value = value[part]
        elif error["type"] == "missing" and part == error["loc"][-1]:
            return [*path, part], _MISSING
        else:
            break
    return path, value


def explain(model: type[BaseModel], errors: list[dict], body) -> tuple[str, str | None]:
    """pydantic's errors for `model` as one message that says what is wrong and what is allowed (the
    field's description, as the schema publishes it), and the parameter at fault."""
    problems: dict[str, str] = {}
    param = None
    for e in errors:
        path, value = _where(e, body)
        name = ".".join(str(p) for p in path) or "body"
        param = param or getattr(e.get("ctx", {}).get("error"), "param", None) or (name if path else None)
        field = model.model_fields.get(path[0]) if len(path) == 1 else None
        if name in problems:
            continue
        if field is not None and field.description:
            if value is _MISSING:
                problems[name] = f"{name} is required; it must be {field.description}"
            elif value in ("", [], {}) or isinstance(value, str) and not value.strip():
                problems[name] = f"{name} is empty; it must be {field.description}"
            else:   # pydantic's own words too, unless they name a union's branch the client never chose
                said = e["msg"].removeprefix("Value error, ")
                why = "" if len(e["loc"]) > len(path) + 1 else f": {said[0].lower()}{said[1:]}"
                problems[name] = f"{name} must be {field.description}, got {json.dumps(value)[:80]}{why}"
        else:
            problems[name] = f"{name}: {e['msg'].removeprefix('Value error, ')}"
    return "; ".join(problems.values()), param


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: int


class ErrorResponse(BaseModel):
    """OpenAI's error shape, as error_body builds it."""
    error: ErrorDetail


# What each refusal means, for the published schema: every answer but 200 comes in ErrorResponse's shape.
ERRORS = {
    400: "invalid request: the body breaks the schema, or a rule it cannot state: prompt + max_tokens over the "
         "context (a text's tokens depend on the tokenizer), min_tokens over max_tokens",
    401: "no API key, or the wrong one (the server was started with --api-key)",
    404: "the model named is not the one this server serves",
    413: "the request body is larger than the server's limit (--max-body-bytes)",
    500: "a worker failed while serving the request",
    503: "the server is at its limit of active requests, or no worker is alive; retry after Retry-After seconds",
}


def error_responses(*statuses: int) -> dict:
    """FastAPI's `responses=` for these statuses, each with OpenAI's error body."""
    return {s: {"model": ErrorResponse, "description": ERRORS[s]} for s in statuses}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_body(rid: str, model: str, choices: list[tuple[str, str | None, dict | None]], prompt_tokens: int,
                    tokens: int) -> dict:
    """`choices`: (text, finish reason, logprobs) per choice, in order."""
    return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": i, "text": text, "logprobs": lp, "finish_reason": finish}
                        for i, (text, finish, lp) in enumerate(choices)],
            "usage": usage(prompt_tokens, tokens)}


def completion_chunk(rid: str, model: str, text: str, finish: str | None, index: int = 0,
                     logprobs: dict | None = None) -> dict:
    return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}]}


def chat_body(rid: str, model: str, choices: list[tuple[str, str | None, dict | None]], prompt_tokens: int,
              tokens: int) -> dict:
    return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": i, "message": {"role": "assistant", "content": text}, "logprobs": lp,
                         "finish_reason": finish} for i, (text, finish, lp) in enumerate(choices)],
            "usage": usage(prompt_tokens, tokens)}


def chat_chunk(rid: str, model: str, delta: dict, finish: str | None, index: int = 0,
               logprobs: dict | None = None) -> dict:
    return {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]}


def usage_chunk(rid: str, model: str, obj: str, prompt_tokens: int, tokens: int) -> dict:
    return {"id": rid, "object": obj, "created": int(time.time()), "model": model, "choices": [],
            "usage": usage(prompt_tokens, tokens)}


def error_body(message: str, kind: str = "invalid_request_error", code: int = 400, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


async def send_error(send, status: int, message: str, kind: str, headers: tuple = ()) -> None:
    """An error in OpenAI's shape sent from ASGI middleware, which answers before the app is reached."""
    body = json.dumps(error_body(message, kind, status)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})
