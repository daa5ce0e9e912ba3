"""Turn what a client sends (text, chat messages, token ids) into token ids, or refuse it clearly."""
from __future__ import annotations

import threading

from .config import RequestError, SamplingParams


def _check_unicode(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RequestError(f"prompt is not valid Unicode text ({exc.reason} at character {exc.start}); "
                           "send UTF-8 text without lone surrogates") from None


class TokenIds(list):
    """A prompt's token ids as an encoder produced or checked them: encoding them again returns them as
    they are, so a request is checked once, at its front door."""


class PromptEncoder:
    def __init__(self, tokenizer, vocab_size: int, max_context: int):
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.max_context = max_context
        # Rust tokenizers raise "Already borrowed" when two threads use one at once.
        self._lock = threading.Lock()

    def decode(self, ids: list[int]) -> str:
        with self._lock:
            return self.tokenizer.decode(ids, skip_special_tokens=True)

    def token_strings(self, ids: list[int]) -> list[str]:
        """Each token on its own, special tokens included (how logprobs name them)."""
        with self._lock:
            return [self.tokenizer.decode([i]) for i in ids]

    def encode(self, prompt: str | list[int] | list[dict]) -> TokenIds:
        """Text, token ids, or chat messages (rendered with the tokenizer's chat template)."""
        if isinstance(prompt, TokenIds):
            return prompt
        if isinstance(prompt, str):
            _check_unicode(prompt)
            if not prompt.strip():
                raise RequestError("prompt is empty; send at least one non-space character")
            with self._lock:
                ids = self.tokenizer.encode(prompt, add_special_tokens=False)
            if not ids:
                raise RequestError("prompt has no tokens after tokenization")
            return TokenIds(ids)
        if isinstance(prompt, list) and prompt and all(isinstance(m, dict) for m in prompt):
            return self._encode_chat(prompt)
        if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            bad = [t for t in prompt if not 0 <= t < self.vocab_size]
            if bad:
                raise RequestError(f"token ids must be in [0, {self.vocab_size}); got {bad[:5]}")
            return TokenIds(prompt)
        raise RequestError("prompt must be non-empty text, a list of token ids, or a list of chat messages")

    def _encode_chat(self, messages: list[dict]) -> list[int]:
        for m in messages:
            if not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise RequestError("each chat message needs a string 'role' and a string 'content'")
            _check_unicode(m["content"])
        if not any(m["content"].strip() for m in messages):
            raise RequestError("all chat messages are empty; send at least one non-space character")
        with self._lock:
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return TokenIds(ids["input_ids"] if hasattr(ids, "keys") else ids)

    def check_length(self, prompt_tokens: int, params: SamplingParams, kv_capacity: int) -> None:
        limit = min(self.max_context, kv_capacity)
        if prompt_tokens + params.max_tokens > limit:
            raise RequestError(
                f"prompt ({prompt_tokens} tokens) + max_tokens ({params.max_tokens}) = "
                f"{prompt_tokens + params.max_tokens} tokens exceeds the limit of {limit} tokens "
                f"(context window {self.max_context}, KV cache {kv_capacity})"
            )
