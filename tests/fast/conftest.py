"""The fast tier: no model. A test here that tries to load one fails at once, so the tier stays fast."""
import pytest


@pytest.fixture(autouse=True)
def no_model(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("tests/fast loads no model: use tests/fast/tiny_model.py, or move the test up a folder")
    monkeypatch.setattr("engine.core.model_loader.load_model", refuse)
    monkeypatch.setattr("engine.core.llm_engine.load_model", refuse)
    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", refuse)
