"""Settings of the engine and of one request, validated where they are made."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Policy(StrEnum):
    """How a worker's scheduler mixes prompts and decodes (engine/core/scheduler.py)."""
    PREFILL_FIRST = "prefill-first"   # a waiting prompt is prefilled whole; running decodes wait
    CHUNKED = "chunked"               # a per-step token budget: decodes first, then a piece of a prompt

MAX_TOKENS_LIMIT = 16384  # a single request may not ask for more than this
GREEDY_BELOW = 1e-5       # a temperature below this samples greedily, as in vLLM (_SAMPLING_EPS)
SEED_RANGE = (-(2 ** 63), 2 ** 64 - 1)   # what torch.Generator.manual_seed accepts
MAX_LOGPROBS = 20         # most alternatives per token a request may ask for (vLLM's max_logprobs default)


class RequestError(ValueError):
    """A request the engine refuses; the message says what is wrong and what is allowed."""


@dataclass(slots=True)
class EngineConfig:
    model: str = "bundled"          # "bundled", a Hugging Face id, or a local folder
    device: str = "auto"            # auto | cpu | cuda | cuda:N
    dtype: str = "auto"             # auto | float32 | bfloat16 | float16
    policy: Policy = Policy.PREFILL_FIRST
    chunk_size: int = 256           # per-step token budget of the chunked policy
    block_size: int = 16            # tokens per KV block
    kv_cache_tokens: int = 16384    # KV capacity in tokens, reserved at start (SmolLM2 fp32: 720 MiB)
    max_num_seqs: int = 64          # most sequences in one running batch
    max_prefill_tokens: int = 8192  # most prompt tokens prefilled in one prefill-first step
    threads: int | None = None      # CPU threads for torch (None: leave torch's default)
    cpu_cores: tuple[int, ...] | None = None  # CPU affinity of this engine's process
    prefix_cache_tokens: int = 0    # keep prompt-prefix KV after requests end, up to this many tokens (0: off)
    prefix_cache_ttl_s: float = 300.0   # ...for this long after its last use
    kv_store_folder: str | None = None  # the prefix cache's disk tier, shared by workers naming it (None: off)
    kv_store_bytes: int = 4 << 30       # ...bounded to this many bytes
    kv_store_ttl_s: float = 86400.0     # ...and a block unused this long is dropped (a day)
    compile_decode: bool = False    # compile the decode step at start (CPU; core/compiled_decode.py)

    def __post_init__(self) -> None:
        if self.policy not in set(Policy):
            raise ValueError(f"policy must be one of {[p.value for p in Policy]}, got {self.policy!r}")
        self.policy = Policy(self.policy)
        for name in ("chunk_size", "block_size", "kv_cache_tokens", "max_num_seqs", "max_prefill_tokens"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.prefix_cache_tokens < 0 or self.prefix_cache_ttl_s <= 0:
            raise ValueError("prefix_cache_tokens must be >= 0 and prefix_cache_ttl_s > 0")
        if self.kv_store_bytes <= 0 or self.kv_store_ttl_s <= 0:
            raise ValueError(f"kv_store_bytes and kv_store_ttl_s must be positive, got {self.kv_store_bytes}, "
                             f"{self.kv_store_ttl_s}")
        if self.threads is not None and self.threads <= 0:
            raise ValueError(f"threads must be a positive integer or None, got {self.threads}")

    @property
    def num_blocks(self) -> int:
        return -(-self.kv_cache_tokens // self.block_size)


@dataclass(slots=True)
class SamplingParams:
    max_tokens: int = 64
    temperature: float = 0.0        # below GREEDY_BELOW means greedy
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False
    min_tokens: int = 0
    presence_penalty: float = 0.0    # subtracted once from every token already in the output (OpenAI)
    frequency_penalty: float = 0.0   # subtracted per occurrence in the output (OpenAI)
    repetition_penalty: float = 1.0  # divides (positive) or multiplies (negative) the logits of every token
                                     # seen in the prompt or the output (CTRL; transformers and vLLM)
    logprobs: int | None = None      # report each chosen token's log-probability and this many alternatives

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if not isinstance(self.max_tokens, int) or isinstance(self.max_tokens, bool):
            raise RequestError(f"max_tokens must be an integer, got {self.max_tokens!r}")
        if not 1 <= self.max_tokens <= MAX_TOKENS_LIMIT:
            raise RequestError(f"max_tokens must be between 1 and {MAX_TOKENS_LIMIT}, got {self.max_tokens}")
        if not 0.0 <= float(self.temperature) <= 2.0:
            raise RequestError(f"temperature must be between 0 and 2, got {self.temperature}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)
                                      or not SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]):
            raise RequestError(f"seed must be an integer from -2**63 to 2**64-1, got {self.seed!r}")
        if not 0.0 < float(self.top_p) <= 1.0:
            raise RequestError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.min_tokens <= self.max_tokens:
            raise RequestError(
                f"min_tokens must be between 0 and max_tokens ({self.max_tokens}), got {self.min_tokens}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise RequestError("stop must be a list of non-empty strings")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2.0 <= float(getattr(self, name)) <= 2.0:
                raise RequestError(f"{name} must be between -2 and 2, got {getattr(self, name)}")
        if not float(self.repetition_penalty) > 0.0:   # vLLM's bound; 1 means no penalty
            raise RequestError(f"repetition_penalty must be greater than 0, got {self.repetition_penalty}")
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_LOGPROBS:
            raise RequestError(f"logprobs must be between 0 and {MAX_LOGPROBS}, got {self.logprobs}")

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW

    @property
    def penalized(self) -> bool:
        return bool(self.presence_penalty or self.frequency_penalty or self.repetition_penalty != 1.0)
