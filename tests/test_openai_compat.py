"""What a client written for vLLM or OpenAI sends works, or is refused by name: the `openai` package
itself drives the server, and raw bodies check what it cannot send."""
import time

import httpx
import openai
import pytest

from tests.test_server import server  # noqa: F401  (the module's server fixture: a real HTTP server)

MODEL = "SmolLM2-135M-Instruct"


@pytest.fixture
def client(server):  # noqa: F811
    base, _ = server
    return openai.OpenAI(base_url=f"{base}/v1", api_key="EMPTY", max_retries=0)


def test_the_openai_package_completes_streams_and_chats_with_content_parts(client):
    # The API samples at temperature 1 by default, so only ignore_eos makes the length certain.
    done = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=5,
                                     extra_body={"ignore_eos": True})
    assert done.usage.completion_tokens == 5 and done.choices[0].finish_reason == "length"
    chunks = list(client.chat.completions.create(
        model=MODEL, max_tokens=6, stream=True, extra_body={"ignore_eos": True},
        messages=[{"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                  {"role": "assistant", "content": None},
                  {"role": "user", "content": [{"type": "text", "text": "Say"}, {"type": "text", "text": " hi."}]}]))
    assert len(chunks) == 6 and chunks[-1].choices[0].finish_reason == "length"


def test_what_is_not_implemented_is_refused_by_name_as_the_sdk_expects(client):
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=MODEL, max_tokens=4, messages=[{"role": "user", "content": "Hi"}],
                                       response_format={"type": "json_object"})
    assert "parameter response_format={'type': 'json_object'} is not supported" in str(refused.value)
    assert refused.value.body["param"] == "response_format"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="another-model", prompt="Hi", max_tokens=4)


@pytest.mark.parametrize("body,param,message", [
    ({"prompt": "Hi", "max_tokens": True}, "max_tokens", "valid integer"),
    ({"prompt": "Hi", "max_tokens": 4, "temperature": True}, "temperature", "valid number"),
    ({"prompt": ["Hi", "word " * 9000], "max_tokens": 4}, None, "prompt 1 of the batch: "),
    ({"prompt": "Hi", "max_completion_tokens": 0}, "max_completion_tokens",
     "max_completion_tokens must be between 1 and 16384"),
    ({"prompt": "Hi", "max_tokens": 4, "best_of": 2}, "best_of", "parameter best_of=2 is not supported"),
    ({"prompt": "Hi", "max_tokens": 4, "logprobs": 21}, "logprobs", "less than or equal to 20"),
    ({"prompt": "Hi", "max_tokens": 4, "logprobs": 2, "echo": True}, "logprobs", "send one of the two"),
    ({"prompt": "Hi", "max_tokens": 4, "n": 0}, "n", "greater than or equal to 1"),
    ({"prompt": "Hi", "max_tokens": 4, "presence_penalty": 3.0}, "presence_penalty",
     "presence_penalty must be between -2 and 2"),
])
def test_strict_types_and_unsupported_values_get_400_naming_the_parameter(server, body, param, message):  # noqa: F811
    base, _ = server
    r = httpx.post(f"{base}/v1/completions", json=body, timeout=60)
    error = r.json()["error"]
    assert r.status_code == 400 and message in error["message"] and error["param"] == param


def test_neutral_values_of_unsupported_parameters_are_accepted(server):  # noqa: F811
    base, _ = server
    body = {"prompt": "Hi", "max_tokens": 3, "n": 1, "best_of": 1, "logprobs": None, "echo": False, "top_k": -1,
            "presence_penalty": 0, "frequency_penalty": 0.0, "logit_bias": None, "ignore_eos": True}
    assert httpx.post(f"{base}/v1/completions", json=body, timeout=60).status_code == 200
    one = httpx.post(f"{base}/v1/completions", json={"prompt": ["Hi"], "max_tokens": 3, "ignore_eos": True},
                     timeout=60)
    assert one.status_code == 200 and one.json()["usage"]["completion_tokens"] == 3


def test_malformed_json_says_what_is_wrong_and_where(server):  # noqa: F811
    base, _ = server
    r = httpx.post(f"{base}/v1/completions", content=b'{"prompt": "Hi",}', timeout=60,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    assert "at character" in r.json()["error"]["message"]


def test_without_max_tokens_the_answer_may_use_the_rest_of_the_context(server):  # noqa: F811
    base, cluster = server
    assert cluster.room_for_answer(8100) == 92 and cluster.room_for_answer(100) == 8092
    # Greedy, so the answer is the same every run (at the API's default temperature of 1 it could
    # wander on for thousands of tokens now that nothing caps it).
    r = httpx.post(f"{base}/v1/chat/completions", timeout=120,
                   json={"messages": [{"role": "user", "content": "Say hello."}], "temperature": 0})
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "stop"


def test_with_an_api_key_only_clients_that_send_it_are_served(server):  # noqa: F811
    from fastapi.testclient import TestClient

    from engine.server.app import create_app
    _, cluster = server
    app = create_app(cluster, api_key="s3cret")
    for key, error in (("wrong", "the API key is wrong"), ("", "no API key was sent")):
        sdk = openai.OpenAI(base_url="http://testserver/v1", api_key=key or "unused", max_retries=0,
                            http_client=TestClient(app), default_headers={} if key else {"Authorization": ""})
        with pytest.raises(openai.AuthenticationError) as refused:
            sdk.completions.create(model=MODEL, prompt="Hi", max_tokens=2)
        assert error in str(refused.value)
    sdk = openai.OpenAI(base_url="http://testserver/v1", api_key="s3cret", max_retries=0, http_client=TestClient(app))
    answer = sdk.completions.create(model=MODEL, prompt="Hi", max_tokens=2, extra_body={"ignore_eos": True})
    assert answer.usage.completion_tokens == 2
    assert TestClient(app).get("/health").status_code == 200   # open to load balancers, as in vLLM


def test_echo_returns_the_prompt_before_the_answer_streamed_or_not(client):
    done = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=3, echo=True,
                                     extra_body={"ignore_eos": True})
    assert done.choices[0].text.startswith("The capital of France is") and done.usage.completion_tokens == 3
    chunks = list(client.completions.create(model=MODEL, prompt="One, two,", max_tokens=3, echo=True, stream=True,
                                            extra_body={"ignore_eos": True}))
    assert chunks[0].choices[0].text == "One, two," and chunks[0].choices[0].finish_reason is None
    assert len(chunks) == 4 and chunks[-1].choices[0].finish_reason == "length"
    with pytest.raises(openai.BadRequestError) as refused:   # chat has no echo here
        client.chat.completions.create(model=MODEL, max_tokens=2, messages=[{"role": "user", "content": "Hi"}],
                                       extra_body={"echo": True})
    assert refused.value.body["param"] == "echo"



def test_a_batch_of_prompts_gets_one_choice_each_streamed_or_not(client, server):  # noqa: F811
    _, cluster = server
    done = client.completions.create(model=MODEL, prompt=["One, two,", "The sky is"], max_tokens=3,
                                     extra_body={"ignore_eos": True})
    assert [c.index for c in done.choices] == [0, 1] and done.usage.completion_tokens == 6
    by_ids = client.completions.create(model=MODEL, prompt=[[504, 28, 827, 28], [504, 28]], max_tokens=2)
    assert len(by_ids.choices) == 2
    chunks = list(client.completions.create(model=MODEL, prompt=["A", "B", "C"], max_tokens=4, stream=True,
                                            extra_body={"ignore_eos": True}))
    for index in (0, 1, 2):
        mine = [c.choices[0] for c in chunks if c.choices[0].index == index]
        assert len(mine) == 4 and mine[-1].finish_reason == "length"
    # A batch with a prompt that cannot be served is refused whole, and nothing of it keeps running.
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=MODEL, prompt=["Fine", "word " * 9000], max_tokens=2)
    deadline = time.time() + 20   # the first prompt, already started, is cancelled: its worker confirms
    while cluster.active_requests and time.time() < deadline:
        time.sleep(0.1)
    assert cluster.active_requests == 0


def test_n_gives_n_choices_per_prompt_each_seeded_on_its_own(client):
    prompt = "Write a line about the sea."
    three = client.completions.create(model=MODEL, prompt=prompt, max_tokens=8, n=3, temperature=1.0, seed=5,
                                      extra_body={"ignore_eos": True})
    texts = [c.text for c in three.choices]
    assert [c.index for c in three.choices] == [0, 1, 2] and len(set(texts)) == 3
    alone = client.completions.create(model=MODEL, prompt=prompt, max_tokens=8, temperature=1.0, seed=6,
                                      extra_body={"ignore_eos": True})
    assert alone.choices[0].text == texts[1]   # choice k samples with seed + k, as vLLM's n does
    assert three.usage.prompt_tokens == alone.usage.prompt_tokens and three.usage.completion_tokens == 24
    batch = client.completions.create(model=MODEL, prompt=["One, two,", "The sky is"], max_tokens=2, n=2,
                                      temperature=0)
    assert [c.index for c in batch.choices] == [0, 1, 2, 3]   # prompt i's choices are i*n .. i*n+n-1
    assert batch.choices[0].text == batch.choices[1].text != batch.choices[2].text   # greedy: n equal answers
    chunks = list(client.chat.completions.create(model=MODEL, max_tokens=3, n=2, stream=True, temperature=1.0,
                                                 messages=[{"role": "user", "content": "Hi"}],
                                                 extra_body={"ignore_eos": True}))
    for index in (0, 1):
        mine = [c.choices[0] for c in chunks if c.choices and c.choices[0].index == index]
        assert mine[0].delta.role == "assistant" and len(mine) == 3 and mine[-1].finish_reason == "length"


LONG = "Tell me about the history of the city of Paris. " * 12   # over the server's 100-token threshold


@pytest.mark.parametrize("prompt", ["The capital of France is", LONG], ids=["colocated", "prefilled-elsewhere"])
def test_completion_logprobs_name_the_chosen_token_and_its_alternatives(client, prompt):
    done = client.completions.create(model=MODEL, prompt=prompt, max_tokens=5, logprobs=3, temperature=0,
                                     extra_body={"ignore_eos": True})
    lp = done.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 5
    assert "".join(lp.tokens) == done.choices[0].text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(5)]
    for token, value, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert value <= 0 and top[token] == value and value == max(top.values()) and len(top) == 3  # greedy
    streamed = list(client.completions.create(model=MODEL, prompt=prompt, max_tokens=5, logprobs=3, stream=True,
                                              temperature=0, extra_body={"ignore_eos": True}))
    assert [c.choices[0].logprobs.tokens[0] for c in streamed] == lp.tokens
    assert [c.choices[0].logprobs.text_offset[0] for c in streamed] == lp.text_offset


def test_chat_logprobs_and_top_logprobs_in_openais_shape(client):
    messages = [{"role": "user", "content": "Name a colour."}]
    done = client.chat.completions.create(model=MODEL, max_tokens=4, messages=messages, logprobs=True, top_logprobs=2,
                                          temperature=0, extra_body={"ignore_eos": True})
    content = done.choices[0].logprobs.content
    assert len(content) == 4 and "".join(c.token for c in content) == done.choices[0].message.content
    for c in content:
        assert [t.token for t in c.top_logprobs][0] == c.token and len(c.top_logprobs) == 2
        assert bytes(c.bytes).decode() == c.token
    plain = client.chat.completions.create(model=MODEL, max_tokens=2, messages=messages)
    assert plain.choices[0].logprobs is None
    streamed = list(client.chat.completions.create(model=MODEL, max_tokens=4, messages=messages, logprobs=True,
                                                   stream=True, temperature=0, extra_body={"ignore_eos": True}))
    assert [c.choices[0].logprobs.content[0].token for c in streamed] == [c.token for c in content]
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=MODEL, max_tokens=2, messages=messages, top_logprobs=2)
    assert refused.value.body["param"] == "top_logprobs"


def test_penalties_change_a_repetitive_answer(client):
    prompt = "Repeat after me: the cat sat on the mat, the cat sat on the mat, the cat sat on the mat."
    plain = client.completions.create(model=MODEL, prompt=prompt, max_tokens=24, temperature=0,
                                      extra_body={"ignore_eos": True})
    for penalty in ({"frequency_penalty": 1.5}, {"presence_penalty": 1.5}, {"extra_body": {"repetition_penalty": 1.5}}):
        extra = penalty.pop("extra_body", {})
        penalized = client.completions.create(model=MODEL, prompt=prompt, max_tokens=24, temperature=0, **penalty,
                                              extra_body={"ignore_eos": True, **extra})
        assert penalized.choices[0].text != plain.choices[0].text, penalty

