"""One engine in one process: LLMEngine (llm_engine.py) and what it is made of. See docs/structures.md."""
