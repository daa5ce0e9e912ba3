"""The OpenAI-compatible server over real HTTP on loopback, and the load generator against it."""
import json
import re
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

from engine.cluster.cluster import Cluster
from engine.core.config import EngineConfig, SamplingParams
from engine.server.app import create_app
from engine.cluster.topology import Topology
from lab.http_target import HttpTarget
from benchmarks.reference_tools import free_port

MODEL = "SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def server():
    cluster = Cluster(Topology("disaggregated"), EngineConfig(kv_cache_tokens=8192), conditional_threshold=100)
    port = free_port()
    config = uvicorn.Config(create_app(cluster, max_active_requests=48), host="127.0.0.1", port=port,
                            log_level="warning")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not uv.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", cluster
    uv.should_exit = True
    thread.join(10)
    cluster.stop()


def metric(base: str, name: str) -> float:
    text = httpx.get(f"{base}/metrics").text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(match.group(1))


def test_models_health_and_plain_completion(server):
    base, _ = server
    assert httpx.get(f"{base}/health").json() == {"status": "ok"}
    assert httpx.get(f"{base}/v1/models").json()["data"][0]["id"] == MODEL
    r = httpx.post(f"{base}/v1/completions", json={"model": MODEL, "prompt": "The capital of France is",
                                                   "max_tokens": 5, "temperature": 0, "ignore_eos": True}, timeout=60)
    body = r.json()
    assert r.status_code == 200 and body["object"] == "text_completion"
    assert body["usage"]["completion_tokens"] == 5 and body["choices"][0]["finish_reason"] == "length"
    assert "Paris" in body["choices"][0]["text"]


def test_chat_streaming_sends_role_content_finish_usage_and_done(server):
    base, _ = server
    body = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 6, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}, "min_tokens": 6}
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=60) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["usage"]["completion_tokens"] == 6 and chunks[-1]["choices"] == []
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    # One chunk per token, the last one carrying finish_reason (as vLLM does): no extra empty chunk.
    token_chunks = chunks[:-1]
    assert len(token_chunks) == 6 and all(c["choices"][0]["finish_reason"] is None for c in token_chunks[:-1])
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)


def test_32_concurrent_streams_complete_and_token_counts_match_usage(server):
    base, _ = server
    target = HttpTarget(base)
    streams = [target.submit([{"role": "user", "content": f"Tell me about the number {i}."}],
                             SamplingParams(max_tokens=8 + i % 5, ignore_eos=True)) for i in range(32)]
    for s in streams:
        s.result(timeout=300)
    for i, s in enumerate(streams):
        assert s.error is None and s.finish_reason == "length"
        assert len(s.token_times) == s.usage["completion_tokens"] == 8 + i % 5
        assert s.timing.ttft > 0 and s.token_times == sorted(s.token_times)


@pytest.mark.parametrize("payload,message", [
    ("{not json", "request body is not valid JSON"),
    ({"prompt": 12, "max_tokens": 4}, "prompt"),
    ({"prompt": "hi", "max_tokens": "many"}, "max_tokens"),
    ({"prompt": "hi", "max_tokens": -3}, "max_tokens must be between 1 and 16384"),
    ({"prompt": "hi", "temperature": 9}, "temperature must be between 0 and 2"),
    ({"prompt": "", "max_tokens": 3}, "prompt is empty"),
    ({"prompt": "word " * 9000, "max_tokens": 3}, "exceeds the limit of 8192 tokens"),
    ({"prompt": "hi", "seed": 2 ** 64}, "seed must be an integer from -2**63 to 2**64-1"),
])
def test_bad_requests_get_400_with_a_message(server, payload, message):
    base, _ = server
    kwargs = {"content": payload, "headers": {"content-type": "application/json"}} if isinstance(payload, str) \
        else {"json": payload}
    r = httpx.post(f"{base}/v1/completions", timeout=60, **kwargs)
    assert r.status_code == 400
    assert message in r.json()["error"]["message"]
    assert httpx.get(f"{base}/health").status_code == 200


@pytest.mark.parametrize("path,payload,message", [   # what schemathesis found the schema called valid
    ("/v1/completions", {"prompt": ""}, "prompt is empty; it must be text with a non-space character"),
    ("/v1/chat/completions", {"messages": []}, "messages is empty; it must be at least one chat message"),
    ("/tokenize", {}, "send one of prompt (text or token ids) or messages (chat)"),
])
def test_requests_the_schema_calls_invalid_get_400_saying_what_is_allowed(server, path, payload, message):
    base, _ = server
    r = httpx.post(f"{base}{path}", json=payload, timeout=60)
    assert r.status_code == 400 and message in r.json()["error"]["message"]
    schema = httpx.get(f"{base}/openapi.json", timeout=60).json()
    assert "400" in schema["paths"][path]["post"]["responses"]


def test_tokenize_counts_a_prompt_and_chat_messages(server):
    base, _ = server
    text = httpx.post(f"{base}/tokenize", json={"prompt": "Hello there"}, timeout=60).json()
    chat = httpx.post(f"{base}/tokenize", json={"messages": [{"role": "user", "content": "Hello there"}]},
                      timeout=60).json()
    assert text["count"] == len(text["tokens"]) >= 2 and chat["count"] > text["count"]   # the template adds
    refused = httpx.post(f"{base}/tokenize", json={"messages": [{"role": "user", "content": "  "}]}, timeout=60)
    assert refused.status_code == 400 and "one of them with non-space content" in refused.json()["error"]["message"]


def test_a_temperature_too_small_to_divide_by_is_served_and_fails_no_neighbour(server):
    base, _ = server
    with httpx.Client(base_url=base, timeout=120) as client:
        def ask(temperature):
            return client.post("/v1/completions", json={"prompt": "Count to ten:", "max_tokens": 12,
                                                         "temperature": temperature, "ignore_eos": True})
        results = {}
        threads = [threading.Thread(target=lambda t=t: results.setdefault(t, ask(t))) for t in (1e-40, 0.7, 1.0)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert all(r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 12 for r in results.values())


def test_an_oversized_body_is_refused_with_413_before_it_is_read(server):
    base, _ = server
    padded = {"prompt": "hi", "max_tokens": 2, "user": "x" * (5 * 2 ** 20)}   # padding in an ignored field
    r = httpx.post(f"{base}/v1/completions", json=padded, timeout=60)
    assert r.status_code == 413 and "limit of 4194304 bytes" in r.json()["error"]["message"]
    chunked = httpx.post(f"{base}/v1/completions", content=iter([b"x" * 2 ** 20] * 5), timeout=60,
                         headers={"content-type": "application/json"})   # no Content-Length: counted
    assert chunked.status_code == 413


def test_the_server_answers_others_while_it_tokenizes_a_long_prompt(server):
    base, _ = server
    done = []
    big = threading.Thread(target=lambda: done.append(httpx.post(
        f"{base}/v1/completions", json={"prompt": "word " * 700_000, "max_tokens": 2}, timeout=120)))
    big.start()
    time.sleep(0.3)   # the big body is in, its tokenization under way
    health = httpx.get(f"{base}/health", timeout=60)
    answered_while_tokenizing = not done
    big.join()
    assert health.status_code == 200 and answered_while_tokenizing
    assert done[0].status_code == 400 and "exceeds the limit" in done[0].json()["error"]["message"]


def test_a_non_streamed_request_whose_client_leaves_is_cancelled(server):
    base, cluster = server
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{base}/v1/completions", json={"prompt": "Tell me everything.", "max_tokens": 3000,
                                                   "ignore_eos": True}, timeout=2.0)   # the client gives up
    deadline = time.time() + 10
    while cluster.active_requests and time.time() < deadline:
        time.sleep(0.1)
    assert cluster.active_requests == 0
    assert sum(w.load.kv_blocks_used for w in cluster.status()) == 0


@pytest.mark.parametrize("method,path,content,status,message", [
    ("POST", "/v1/completions", b'{"prompt": "\xff\xfe"}', 400, "not valid JSON in UTF-8"),
    ("GET", "/v1/nowhere", None, 404, "no such endpoint: /v1/nowhere"),
    ("GET", "/v1/completions", None, 405, "GET is not allowed on /v1/completions"),
])
def test_every_refusal_comes_in_openai_error_shape(server, method, path, content, status, message):
    base, _ = server
    r = httpx.request(method, f"{base}{path}", content=content, headers={"content-type": "application/json"})
    assert r.status_code == status and message in r.json()["error"]["message"]


def test_unknown_model_is_404(server):
    base, _ = server
    r = httpx.post(f"{base}/v1/completions", json={"model": "gpt-9", "prompt": "hi"}, timeout=30)
    assert r.status_code == 404 and "is not served here" in r.json()["error"]["message"]


def test_client_disconnect_mid_stream_frees_its_kv(server):
    base, cluster = server
    body = {"prompt": "Once upon a time", "max_tokens": 2000, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=60) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i > 10:
                break  # leave mid-stream
    deadline = time.time() + 20
    used = f'pdlab:kv_cache_blocks_used{{model_name="{MODEL}"}}'
    while time.time() < deadline and (metric(base, used) > 0 or cluster.active_requests):
        time.sleep(0.2)
    assert metric(base, used) == 0
    assert cluster.active_requests == 0


# What vLLM's own example dashboard queries (vllm-project/vllm, examples/online_serving/prometheus_grafana/
# grafana.json, commit 004f771f), all by model_name; its older versions also ask for the swapped and CPU-cache
# series of vLLM's V0 engine, which have no meaning here.
VLLM_DASHBOARD_METRICS = {
    "vllm:e2e_request_latency_seconds_bucket", "vllm:e2e_request_latency_seconds_sum",
    "vllm:e2e_request_latency_seconds_count", "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
    "vllm:time_per_output_token_seconds_bucket", "vllm:time_per_output_token_seconds_sum",
    "vllm:time_per_output_token_seconds_count", "vllm:num_requests_running", "vllm:num_requests_waiting",
    "vllm:time_to_first_token_seconds_bucket", "vllm:time_to_first_token_seconds_sum",
    "vllm:time_to_first_token_seconds_count", "vllm:gpu_cache_usage_perc", "vllm:request_prompt_tokens_bucket",
    "vllm:request_generation_tokens_bucket", "vllm:request_success_total", "vllm:request_queue_time_seconds_sum",
    "vllm:request_prefill_time_seconds_sum", "vllm:request_decode_time_seconds_sum",
    "vllm:request_max_num_generation_tokens_sum"}


def test_metrics_expose_latency_histograms_and_kv_transfers(server):
    base, _ = server
    long_prompt = "Summarise: " + "the cache moves between workers. " * 30
    # ignore_eos: the API samples, and a first EOS would end the request before any hand-off.
    r = httpx.post(f"{base}/v1/completions", timeout=60,
                   json={"prompt": long_prompt, "max_tokens": 3, "ignore_eos": True})
    assert r.status_code == 200
    text = httpx.get(f"{base}/metrics").text
    label = f'model_name="{MODEL}"'
    for name in ("vllm:time_to_first_token_seconds_bucket", "vllm:inter_token_latency_seconds_count",
                 "vllm:num_requests_running", "vllm:kv_cache_usage_perc", "vllm:generation_tokens_total",
                 "vllm:request_queue_time_seconds_bucket", "vllm:prefix_cache_queries_total",
                 "vllm:iteration_tokens_total_bucket", "vllm:num_preemptions_total"):
        assert re.search(rf"^{re.escape(name)}{{.*{label}", text, re.M), name   # vLLM's names, by model_name
    assert 'le="2560.0"' in text   # TTFT buckets reach what a long prompt on a busy CPU takes
    assert metric(base, f"pdlab:kv_transfer_bytes_total{{{label}}}") > 0
    # Every metric that the shipped Grafana dashboard queries is served.
    dashboard = json.loads((Path(__file__).resolve().parents[1] / "docs/grafana/pd-lab-dashboard.json").read_text())
    queried = {name for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"(?:vllm|pdlab):\w+", target["expr"])}
    served = set(re.findall(r"^((?:vllm|pdlab):\w+)[{ ]", text, re.M))
    assert len(queried) >= 15 and queried <= served, queried - served
    assert VLLM_DASHBOARD_METRICS <= served, VLLM_DASHBOARD_METRICS - served
    events = httpx.get(f"{base}/events").json()
    assert events["transfers"] and events["steps"] and "prefill-0" in events["workers"]


def test_overloaded_server_answers_503_with_retry_after(server):
    from fastapi.testclient import TestClient
    _, cluster = server
    client = TestClient(create_app(cluster, max_active_requests=0))
    r = client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2})
    assert r.status_code == 503 and r.headers["Retry-After"] == "1"
    assert "at its limit of 0 active requests" in r.json()["error"]["message"]


def test_a_killed_worker_is_restarted_and_health_says_what_happened(server):
    # Last in this module: it kills the module server's decode worker.
    import os
    import signal
    base, cluster = server
    os.kill(cluster.pool.workers["decode-0"].process.pid, signal.SIGKILL)
    deadline = time.time() + 30
    while httpx.get(f"{base}/health").status_code == 200 and time.time() < deadline:
        time.sleep(0.1)
    down = httpx.get(f"{base}/health")
    assert down.status_code == 503 and down.headers["retry-after"]
    assert "decode-0 is down (exited (exit code -9)), restarting" in down.json()["error"]["message"]
    deadline = time.time() + 120
    while httpx.get(f"{base}/health").status_code != 200 and time.time() < deadline:
        time.sleep(0.5)
    assert httpx.get(f"{base}/health").status_code == 200
    r = httpx.post(f"{base}/v1/completions", json={"prompt": "Hello", "max_tokens": 4, "ignore_eos": True},
                   timeout=60)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4
