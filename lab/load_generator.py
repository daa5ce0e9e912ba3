"""Load for any lab.target.Target: chat users, or Poisson arrivals,
plus long prompts injected on demand. Runs on its own threads and stops by itself at a time limit.
"""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from enum import StrEnum

from engine.core.client_stream import ClientStream
from engine.core.config import SamplingParams

from .prompts import chat_question, long_document_prompt
from .target import Target


@dataclass(frozen=True)
class ChatLoad:
    users: int = 6                  # closed loop: each user waits for its answer, thinks, asks again
    rate_rps: float | None = None   # open loop instead: Poisson arrivals at this rate (users ignored)
    output_tokens: int = 48
    think_s: float = 0.5            # mean pause between an answer and the next question
    stagger_s: float = 0.4          # user i starts at i * stagger_s: users do not move in lockstep
    time_limit_s: float = 1800.0    # the load stops by itself after this long
    seed: int = 0

    def __post_init__(self):
        if self.users < 0 or self.output_tokens < 1:
            raise ValueError(f"users must be >= 0 and output_tokens >= 1, got {self.users}, {self.output_tokens}")
        if self.rate_rps is not None and not 0 < self.rate_rps <= 100:
            raise ValueError(f"rate_rps must be in (0, 100] requests/s, got {self.rate_rps}")
        if self.think_s < 0 or self.stagger_s < 0 or self.time_limit_s <= 0:
            raise ValueError("think_s and stagger_s must be >= 0 s, time_limit_s > 0 s")


class RequestKind(StrEnum):
    SHORT = "short"   # a chat user's question
    LONG = "long"     # an injected long prompt


@dataclass
class Sent:
    kind: RequestKind
    user: int              # -1 for injected and open-loop requests
    stream: ClientStream   # the in-process RequestStream, or lab.http_target.HttpStream


class LoadGenerator:
    def __init__(self, target: Target, load: ChatLoad):
        self.target = target
        self.load = load
        self.requests: list[Sent] = []
        self.started = 0.0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._injected = 0

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def start(self) -> LoadGenerator:
        self.started = time.perf_counter()
        rng = random.Random(self.load.seed)
        if self.load.rate_rps:
            self._spawn(self._poisson, rng.randrange(1 << 30))
        else:
            for i in range(self.load.users):
                self._spawn(self._user, i, rng.randrange(1 << 30))
        self._spawn(self._stop_at_time_limit)
        return self

    def _spawn(self, fn, *args) -> None:
        thread = threading.Thread(target=fn, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _params(self) -> SamplingParams:
        return SamplingParams(max_tokens=self.load.output_tokens, ignore_eos=True)

    def _send(self, kind: RequestKind, user: int, prompt, params: SamplingParams) -> Sent | None:
        try:
            stream = self.target.submit(prompt, params)
        except Exception as exc:  # a refused or failed request is counted, and the load goes on
            with self._lock:
                self.errors.append(f"{type(exc).__name__}: {exc}")
            return None
        sent = Sent(kind, user, stream)
        with self._lock:
            self.requests.append(sent)
        return sent

    def _user(self, index: int, seed: int) -> None:
        rng = random.Random(seed)
        self._stop.wait(index * self.load.stagger_s)
        while not self._stop.is_set():
            sent = self._send(RequestKind.SHORT, index, chat_question(rng), self._params())
            while sent and not sent.stream.wait(0.25) and not self._stop.is_set():
                pass
            self._stop.wait(rng.uniform(0, 2 * self.load.think_s) if sent else 1.0)

    def _poisson(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self._stop.wait(rng.expovariate(self.load.rate_rps)):
            self._send(RequestKind.SHORT, -1, chat_question(rng), self._params())

    def _stop_at_time_limit(self) -> None:
        if not self._stop.wait(self.load.time_limit_s):
            self.stop()

    def inject(self, prompt_tokens: int = 4000, text: str | None = None, output_tokens: int = 8) -> Sent | None:
        """Send one long prompt now: the learner's own text, or a document of `prompt_tokens` tokens."""
        if text is not None:
            prompt = [{"role": "user", "content": text}]
        else:
            self._injected += 1
            prompt = long_document_prompt(prompt_tokens, self.target.count_tokens,
                                          seed=self.load.seed + self._injected)
        return self._send(RequestKind.LONG, -1, prompt, SamplingParams(max_tokens=output_tokens, ignore_eos=True))

    def stop(self, timeout: float = 10.0) -> None:
        """Stop sending; requests still in flight are cancelled."""
        self._stop.set()
        for sent in self.snapshot():
            if not sent.stream.done:
                sent.stream.cancel()
        current = threading.current_thread()
        for thread in self._threads:
            if thread is not current:
                thread.join(timeout)

    def snapshot(self) -> list[Sent]:
        with self._lock:
            return list(self.requests)
