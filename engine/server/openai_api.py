"""OpenAI-compatible request bodies (with vLLM's extensions) and response payloads."""
from __future__ import annotations

import json
import time
import uuid
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, model_validator

from ..core.config import MAX_LOGPROBS, SamplingParams


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


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")  # clients send fields that change nothing here (user, ...)
    model: StrictStr | None = None
    max_tokens: StrictInt | None = None
    max_completion_tokens: StrictInt | None = None
    n: StrictInt = Field(1, ge=1, le=MAX_N)   # choices per prompt, each sampled on its own
    temperature: StrictFloat = 1.0   # strict: a boolean is not a number (an integer is)
    top_p: StrictFloat = 1.0
    seed: StrictInt | None = None
    stop: StrictStr | list[StrictStr] | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    presence_penalty: StrictFloat = 0.0
    frequency_penalty: StrictFloat = 0.0
    repetition_penalty: StrictFloat = 1.0   # vLLM extension
    ignore_eos: StrictBool = False       # vLLM extension
    min_tokens: StrictInt = 0            # vLLM extension

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
    implemented: ClassVar[frozenset[str]] = frozenset({"echo"})
    # One prompt (text or token ids) or a batch of them, as OpenAI's completions API defines it.
    prompt: StrictStr | list[StrictInt] | list[StrictStr] | list[list[StrictInt]]
    echo: StrictBool = False   # the answer starts with the prompt, as OpenAI's and vLLM's completions do
    logprobs: StrictInt | None = Field(None, ge=0, le=MAX_LOGPROBS)

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


class ChatRequest(_Common):
    messages: list[ChatMessage]
    logprobs: StrictBool = False
    top_logprobs: StrictInt | None = Field(None, ge=0, le=MAX_LOGPROBS)

    @model_validator(mode="after")
    def _top_logprobs_needs_logprobs(self):
        if self.top_logprobs and not self.logprobs:
            raise ParameterError("top_logprobs", "top_logprobs needs logprobs: true")
        return self

    @property
    def asked_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


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
