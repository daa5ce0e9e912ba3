"""The lab's handle on a local engine running on its own thread."""
from __future__ import annotations

from engine.config import EngineConfig
from engine.engine import LLMEngine
from engine.engine_loop import EngineLoop


def start_local_engine(model: str = "bundled", policy: str = "prefill-first") -> EngineLoop:
    return EngineLoop(LLMEngine(EngineConfig(model=model, policy=policy), name="lab"))
