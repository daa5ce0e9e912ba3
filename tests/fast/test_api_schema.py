"""The published schema (/openapi.json) says what the server accepts and answers; no model needed: the
app is built over a stand-in cluster, and only requests refused before the cluster is reached are sent."""
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from engine.server import openai_api as api
from engine.server.app import create_app

VOCAB, CONTEXT_WINDOW, KV_TOKENS = 49152, 8192, 512
POSTS = ["/v1/completions", "/v1/chat/completions", "/tokenize"]


def stand_in_cluster():
    return SimpleNamespace(model_name="m", specs=[SimpleNamespace(engine=SimpleNamespace(block_size=16,
                                                                                         num_blocks=32))],
                           prompts=SimpleNamespace(vocab_size=VOCAB, max_context=CONTEXT_WINDOW),
                           kv_capacity=KV_TOKENS)


@pytest.fixture(scope="module")
def app():
    return create_app(stand_in_cluster())


@pytest.fixture(scope="module")
def schema(app):
    return app.openapi()


def body_schema(schema, path):
    ref = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    return schema["components"]["schemas"][ref.rsplit("/", 1)[1]]


def text_branches(prop):
    return [b for b in prop["anyOf"] if b.get("type") == "string"] + \
        [b["items"] for b in prop["anyOf"] if b.get("items", {}).get("type") == "string"]


def test_prompt_text_must_have_a_non_space_character(schema):
    for path in ("/v1/completions", "/tokenize"):
        branches = text_branches(body_schema(schema, path)["properties"]["prompt"])
        assert branches and all(b["minLength"] == 1 and b["pattern"] == r"\S" for b in branches), path


def test_token_ids_and_max_tokens_state_this_servers_limits(schema):
    props = body_schema(schema, "/v1/completions")["properties"]
    ids = next(b for b in props["prompt"]["anyOf"] if b.get("items", {}).get("type") == "integer")
    assert (ids["items"]["minimum"], ids["items"]["maximum"]) == (0, VOCAB - 1)
    assert ids["minItems"] == 1 and ids["maxItems"] == KV_TOKENS - 1   # the KV cache is the smaller limit
    for name in ("max_tokens", "max_completion_tokens"):
        number = next(b for b in props[name]["anyOf"] if b.get("type") == "integer")
        assert (number["minimum"], number["maximum"]) == (1, KV_TOKENS - 1), name
    assert (props["temperature"]["minimum"], props["temperature"]["maximum"]) == (0, 2)
    assert props["top_p"]["exclusiveMinimum"] == 0 and props["n"]["maximum"] == api.MAX_N


def test_chat_needs_a_message_with_content_and_tokenize_one_of_prompt_or_messages(schema):
    messages = body_schema(schema, "/v1/chat/completions")["properties"]["messages"]
    assert messages["minItems"] == 1 and messages["contains"]["required"] == ["content"]
    tokenize = body_schema(schema, "/tokenize")
    assert tokenize["oneOf"] == [{"required": ["prompt"]}, {"required": ["messages"]}]
    assert "default" not in tokenize["properties"]["prompt"]   # a null default its own type refuses


def error_shape(operation, status):
    content = operation["responses"][str(status)]["content"]["application/json"]
    return content["schema"]["$ref"].rsplit("/", 1)[1]


def test_every_post_documents_400_and_413_in_openai_error_shape(schema):
    for path in POSTS:
        operation = schema["paths"][path]["post"]
        for status in (400, 413):
            assert error_shape(operation, status) == "ErrorResponse", (path, status)
    detail = schema["components"]["schemas"]["ErrorDetail"]
    assert set(detail["required"]) == set(api.error_body("x")["error"]) == {"message", "type", "param", "code"}


def test_generation_documents_its_refusals_and_its_event_stream(schema):
    for path in POSTS[:2]:
        responses = schema["paths"][path]["post"]["responses"]
        assert {"400", "404", "413", "500", "503"} <= set(responses), path
        assert set(responses["200"]["content"]) == {"application/json", "text/event-stream"}
    assert "503" in schema["paths"]["/health"]["get"]["responses"]


def test_no_422_is_documented_since_validation_errors_are_400(schema):
    statuses = {s for ops in schema["paths"].values() for op in ops.values() for s in op["responses"]}
    assert "422" not in statuses and "HTTPValidationError" not in schema["components"]["schemas"]


def test_metrics_documents_prometheus_text(schema):
    assert list(schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain; version=0.0.4"]


def test_401_is_documented_on_v1_only_when_a_key_is_required(schema):
    assert not any("401" in op["responses"] for ops in schema["paths"].values() for op in ops.values())
    keyed = create_app(stand_in_cluster(), api_key="secret").openapi()
    for path, ops in keyed["paths"].items():
        for op in ops.values():
            assert ("401" in op["responses"]) == path.startswith("/v1"), path


@pytest.mark.parametrize("path,body,message", [
    ("/v1/completions", {"prompt": ""}, "prompt is empty; it must be text with a non-space character"),
    ("/v1/completions", {"prompt": " \n\t"}, "prompt is empty"),
    ("/v1/completions", {"prompt": [1, VOCAB]}, f"token ids from 0 to {VOCAB - 1}"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": KV_TOKENS},
     f"(at most {KV_TOKENS - 1} on this server: prompt + max_tokens must fit in {KV_TOKENS} tokens), got {KV_TOKENS}"),
    ("/v1/completions", {"prompt": "hi", "top_p": 0}, "top_p must be in (0, 1], got 0"),
    ("/v1/completions", {"prompt": "hi", "stop": [""]}, 'stop must be a non-empty string or a list of them, got [""]'),
    ("/v1/chat/completions", {"messages": []}, "messages is empty; it must be at least one chat message"),
    ("/v1/chat/completions", {"messages": [{"role": "bot"}]}, "messages.0.role: Input should be 'system'"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": " "}, {"role": "assistant"}]},
     "messages must be at least one chat message, one of them with non-space content, got"),
    ("/v1/completions", {"prompt": "hi", "seed": True},
     "seed must be an integer from -2**63 to 2**64-1, got true: input should be a valid integer"),
    ("/tokenize", {}, "send one of prompt (text or token ids) or messages (chat)"),
    ("/tokenize", {"prompt": "hi", "messages": [{"role": "user", "content": "hi"}]}, "not both"),
])
def test_what_the_schema_calls_invalid_is_a_400_that_says_what_is_allowed(app, path, body, message):
    r = TestClient(app).post(path, json=body)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert message in r.json()["error"]["message"]


def test_an_integral_number_is_an_integer_as_json_schema_says_and_a_boolean_is_not():
    completion, _, _ = api.for_server(VOCAB, KV_TOKENS)
    body = completion.model_validate({"prompt": [1, 177.0], "seed": -5.0, "n": 2.0})
    assert body.prompt == [1, 177] and body.seed == -5 and body.n == 2 and type(body.n) is int
    for bad in ({"n": True}, {"n": "2"}, {"n": 2.5}):
        with pytest.raises(ValueError):
            completion.model_validate({"prompt": "hi", **bad})


def test_the_schema_states_the_rules_between_fields_that_the_models_check(schema):
    # Stated with JSON Schema's `not`, so a client (or schemathesis) knows them before it is refused.
    assert body_schema(schema, "/v1/completions")["not"]["required"] == ["echo", "logprobs"]
    assert body_schema(schema, "/v1/chat/completions")["not"]["properties"]["logprobs"] == {"const": False}


def test_bounds_are_exact_integers_and_each_event_of_a_stream_is_described(schema):
    seed = next(b for b in body_schema(schema, "/v1/completions")["properties"]["seed"]["anyOf"] if "maximum" in b)
    assert seed["maximum"] == 2 ** 64 - 1 and type(seed["maximum"]) is int   # a float would say 2**64
    event = schema["paths"]["/v1/completions"]["post"]["responses"]["200"]["content"]["text/event-stream"]["schema"]
    assert event["required"] == ["data"] and event["properties"]["data"]["type"] == "string"
