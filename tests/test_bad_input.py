"""Bad requests get a clear error naming what is allowed; the engine keeps serving others."""
import pytest

from engine.__main__ import main
from engine.core.config import EngineConfig, RequestError, SamplingParams
from engine.core.model_loader import ModelLoadError, load_model
from tests.helpers import run_to_end


@pytest.mark.parametrize("prompt,message", [
    ("", "prompt is empty"),
    ("   \n\t", "prompt is empty"),
    ([], "prompt must be"),
    ([{"role": "user", "content": "  "}], "chat messages are empty"),
    ([{"role": "user"}], "'role' and a string 'content'"),
    ([10 ** 9], "token ids must be in"),
    (42, "prompt must be"),
])
def test_malformed_prompts_are_refused(make_engine, prompt, message):
    engine = make_engine()
    with pytest.raises(RequestError, match=message):
        engine.add_request(prompt)
    assert not engine.has_work


@pytest.mark.parametrize("params,message", [
    (dict(max_tokens=0), "max_tokens must be between 1 and 16384"),
    (dict(max_tokens=-5), "max_tokens must be between 1 and 16384"),
    (dict(max_tokens=10 ** 9), "max_tokens must be between 1 and 16384"),
    (dict(max_tokens="8"), "max_tokens must be an integer"),
    (dict(temperature=-0.1), "temperature must be between 0 and 2"),
    (dict(temperature=5), "temperature must be between 0 and 2"),
    (dict(top_p=0), r"top_p must be in \(0, 1\]"),
    (dict(top_p=1.5), r"top_p must be in \(0, 1\]"),
    (dict(min_tokens=100, max_tokens=10), "min_tokens must be between 0 and max_tokens"),
    (dict(stop=[""]), "stop must be a list of non-empty strings"),
    (dict(seed=2 ** 64), r"seed must be an integer from -2\*\*63 to 2\*\*64-1"),
    (dict(seed=-(2 ** 63) - 1), r"seed must be an integer from -2\*\*63 to 2\*\*64-1"),
    (dict(seed=True), "seed must be an integer"),
])
def test_invalid_sampling_settings_are_refused(params, message):
    with pytest.raises(RequestError, match=message):
        SamplingParams(**params)


def test_prompt_longer_than_context_names_the_limit(make_engine):
    engine = make_engine(kv_cache_tokens=16384)
    with pytest.raises(RequestError, match=r"exceeds the limit of 8192 tokens \(context window 8192"):
        engine.add_request(list(range(100, 8300)), SamplingParams(max_tokens=4))


def test_request_larger_than_kv_cache_names_the_cache(make_engine):
    engine = make_engine(kv_cache_tokens=256)
    with pytest.raises(RequestError, match="KV cache 256"):
        engine.add_request(list(range(100, 300)), SamplingParams(max_tokens=100))


@pytest.mark.parametrize("text", ["Привет! 你好 🤖🚀 مرحبا", "zero\u200bwidth\u0301 e\u0301",
                                  "\x00\x01 control"])
def test_odd_unicode_is_served(make_engine, text):
    engine = make_engine()
    rid = engine.add_request([{"role": "user", "content": text}], SamplingParams(max_tokens=4, ignore_eos=True))
    assert len(run_to_end(engine)[rid]) == 4


def test_lone_surrogate_is_refused_as_invalid_unicode(make_engine):
    engine = make_engine()
    for prompt in ("\ud800 lone surrogate", [{"role": "user", "content": "a\udfff"}]):
        with pytest.raises(RequestError, match="not valid Unicode text"):
            engine.add_request(prompt)


def test_engine_keeps_serving_after_refusals(make_engine, chat):
    engine = make_engine()
    good = engine.add_request(chat("Hello"), SamplingParams(max_tokens=3, ignore_eos=True))
    for bad in ("", [10 ** 9]):
        with pytest.raises(RequestError):
            engine.add_request(bad)
    with pytest.raises(RequestError):
        engine.add_request(chat("x"), SamplingParams(max_tokens=4), request_id=good)
    assert len(run_to_end(engine)[good]) == 3


def test_unknown_model_without_internet_is_a_clear_error(tmp_path, monkeypatch):
    import huggingface_hub.constants
    # The hub reads HF_HUB_OFFLINE once, at import: set the constant too, or the test waits out ~45 s
    # of retries against a network this machine does not have.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match="neither a local folder with a causal LM nor a model id"):
        load_model(str(tmp_path / "no-such-model"), device="cpu")
    with pytest.raises(ModelLoadError, match="could not load model 'someone/not-a-real-model'"):
        load_model("someone/not-a-real-model", device="cpu")


@pytest.mark.parametrize("kwargs,message", [
    (dict(policy="fastest"), "policy must be one of"),
    (dict(chunk_size=0), "chunk_size must be a positive integer"),
    (dict(kv_cache_tokens=-1), "kv_cache_tokens must be a positive integer"),
    (dict(threads=0), "threads must be a positive integer"),
])
def test_invalid_engine_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EngineConfig(**kwargs)


def test_unavailable_device_is_a_clear_error():
    with pytest.raises(ValueError, match="no CUDA GPU is available|only"):
        load_model("bundled", device="cuda:7")


@pytest.mark.parametrize("option", [["--policy", "chunked"], ["--threads", "1"]])
def test_serve_refuses_engine_options_it_would_ignore(option, capsys):
    # A served cluster takes its policy from --mode and its threads from each worker's cores.
    with pytest.raises(SystemExit) as exit_:
        main(["serve", *option])
    assert exit_.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


def test_serve_lists_the_modes_and_transports_it_accepts(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--mode", "sideways"])
    assert "colocated" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", "--transport", "pigeon"])
    assert "'shm', 'disk', 'tcp'" in capsys.readouterr().err
