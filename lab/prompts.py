"""Prompts for experiments: short chat questions and long documents of a chosen token length."""
from __future__ import annotations

import random

TOPICS = ["the ocean", "volcanoes", "the moon", "honey bees", "jazz music", "ancient Rome", "glaciers",
          "chess openings", "tea", "trains", "owls", "the printing press", "coral reefs", "deserts"]
ASKS = ["Tell me three facts about {}.", "Explain {} to a child.", "Write a short poem about {}.",
        "What should a beginner know about {}?", "Describe {} in a few sentences."]
SUBJECTS = ["The server", "A user", "The model", "Each request", "The cluster", "The cache", "A long prompt",
            "The scheduler", "Every token", "The network"]
VERBS = ["waits for", "moves", "stores", "reads", "computes", "streams", "delays", "batches", "evicts", "sends"]
OBJECTS = ["the first token", "a block of memory", "the next batch", "every layer", "the whole prompt",
           "a stream of words", "the KV cache", "the decode step", "a new request", "the user's answer"]


def chat_question(rng: random.Random) -> list[dict]:
    return [{"role": "user", "content": rng.choice(ASKS).format(rng.choice(TOPICS))}]


def long_document_prompt(num_tokens: int, count_tokens, seed: int = 0) -> list[dict]:
    """A chat asking to summarise a document of about `num_tokens` tokens (measured, not guessed)."""
    rng = random.Random(seed)
    sentences: list[str] = []
    # Grow in chunks and measure, so the prompt lands within a few tokens of the target.
    while True:
        messages = [{"role": "user", "content": "Summarise this log in one sentence:\n" + " ".join(sentences)}]
        missing = num_tokens - count_tokens(messages)
        if missing <= 0:
            return messages
        for _ in range(max(1, missing // 9)):  # a sentence is about 8-9 tokens
            sentences.append(f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}.")
