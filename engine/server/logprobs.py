"""Log-probabilities in the two shapes of the OpenAI API: completions' parallel lists and chat's
list of token objects. The chosen token is always reported, with up to the asked number of alternatives."""
from __future__ import annotations

from collections.abc import Callable

from ..core.events import TokenLogprob

Names = Callable[[list[int]], list[str]]   # token ids -> the tokens as text


def completion_logprobs(token_ids: list[int], logprobs: list[TokenLogprob], names: Names,
                        offset: int = 0) -> dict:
    """`offset`: where the first token starts in the choice's text (for a streamed chunk, the length of
    what came before)."""
    chosen = names(token_ids)
    tokens, token_logprobs, top, text_offset = [], [], [], []
    for token, name, lp in zip(token_ids, chosen, logprobs):
        alternatives = dict(zip(names([t for t, _ in lp.top]), (v for _, v in lp.top)))
        alternatives.setdefault(name, lp.logprob)   # up to logprobs + 1 entries, as OpenAI documents
        tokens.append(name)
        token_logprobs.append(lp.logprob)
        top.append(alternatives)
        text_offset.append(offset)
        offset += len(name)
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top, "text_offset": text_offset}


def chat_logprobs(token_ids: list[int], logprobs: list[TokenLogprob], names: Names) -> dict:
    def entry(name: str, value: float) -> dict:
        return {"token": name, "logprob": value, "bytes": list(name.encode("utf-8"))}
    content = []
    for name, lp in zip(names(token_ids), logprobs):
        content.append({**entry(name, lp.logprob),
                        "top_logprobs": [entry(n, v) for n, (_, v) in zip(names([t for t, _ in lp.top]), lp.top)]})
    return {"content": content}
