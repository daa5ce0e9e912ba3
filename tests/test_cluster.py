"""Worker processes and the router: disaggregated output equals colocated, faults stay contained."""
import os
import signal
import time

import pytest

from engine.cluster.cluster import Cluster, ClusterError
from engine.cluster.topology import Topology
from engine.cluster.transports import TRANSPORTS, TransportSettings, leaked_shm_segments
from engine.core.config import EngineConfig, RequestError, SamplingParams
from tests.helpers import greedy_reference

QUESTIONS = ["What is the capital of France?", "hi", "Write a poem about the sea.", "Why is the sky blue?"]
NEW_TOKENS = 16
ENGINE = EngineConfig(kv_cache_tokens=4096)


def ask_all(cluster, chat, questions=QUESTIONS, **params):
    streams = [cluster.submit(chat(q), SamplingParams(max_tokens=NEW_TOKENS, ignore_eos=True, **params))
               for q in questions]
    for s in streams:
        s.result(timeout=120)
    return streams


def kv_blocks_in_use(cluster) -> int:
    deadline = time.time() + 10
    while time.time() < deadline:
        used = sum(w.load.kv_blocks_used for w in cluster.status())
        if used == 0:
            return 0
        time.sleep(0.1)
    return used


@pytest.fixture(scope="module")
def expected(reference_model, loaded):
    enc = lambda t: list(loaded.tokenizer.apply_chat_template(  # noqa: E731
        [{"role": "user", "content": t}], add_generation_prompt=True, tokenize=True)["input_ids"])
    return [greedy_reference(reference_model, enc(q), NEW_TOKENS) for q in QUESTIONS]


@pytest.mark.parametrize("transport", list(TRANSPORTS))
def test_disaggregated_greedy_output_is_token_identical_and_nothing_leaks(chat, expected, transport, tmp_path):
    settings = TransportSettings(transport, disk_folder=str(tmp_path))
    with Cluster(Topology("disaggregated"), ENGINE, transport=settings) as cluster:
        streams = ask_all(cluster, chat)
        assert [s.token_ids for s in streams] == expected
        assert all(s.finish_reason == "length" for s in streams)
        transfers = list(cluster.transfers.values())
        assert len(transfers) == len(QUESTIONS)
        for t in transfers:
            assert t.source == "prefill-0" and t.target == "decode-0" and t.transport == transport
            # shm and nixl push: the prefill worker writes each layer into blocks the decode worker
            # reserved, pool to pool; the others send after the prefill.
            assert t.during_prefill == (transport in ("shm", "nixl"))
            assert t.copies == {"shm": 1, "disk": 4, "tcp": 4, "nixl": 1}[transport]
            assert t.nbytes == t.tokens * 2 * 30 * 3 * 64 * 4   # K and V, 30 layers, 3 KV heads, fp32
            assert 0 < t.send_seconds and t.total_seconds >= t.send_seconds
            if transport == "shm":   # its copies ran inside the prefill: the KV was in place at the hand-off
                assert t.writing_seconds > 0 and t.receive_seconds == 0
            else:
                assert t.receive_seconds > 0
        assert kv_blocks_in_use(cluster) == 0
        assert not leaked_shm_segments()
        assert not list(tmp_path.rglob("*.safetensors"))   # every KV file was consumed
        # Transfer time is part of TTFT: the first token reaches the client after the KV landed.
        for s in streams:
            t = cluster.transfers[s.request_id]
            assert s.token_times[0] >= t.finished_at
    assert not list(tmp_path.iterdir())   # the workers' private KV folders went with them


def test_with_push_off_shm_sends_after_the_prefill_with_the_same_tokens(chat, expected):
    with Cluster(Topology("disaggregated"), ENGINE, transport=TransportSettings("shm", push=False)) as cluster:
        streams = ask_all(cluster, chat)
        assert [s.token_ids for s in streams] == expected
        transfers = list(cluster.transfers.values())
        assert transfers and all(not t.during_prefill and t.copies == 2 and t.receive_seconds > 0 for t in transfers)
        assert kv_blocks_in_use(cluster) == 0
    assert not leaked_shm_segments()


def test_colocated_and_chunked_workers_match_generate(chat, expected):
    for mode in ("colocated", "chunked"):
        with Cluster(Topology(mode), EngineConfig(kv_cache_tokens=4096, chunk_size=8)) as cluster:
            assert [s.token_ids for s in ask_all(cluster, chat)] == expected
            assert not cluster.transfers


def test_conditional_disaggregation_prefills_short_prompts_on_the_decode_worker(chat):
    with Cluster(Topology("disaggregated"), ENGINE, conditional_threshold=40) as cluster:
        short, long = chat("hi"), chat("Please explain, in detail and with examples, how a KV cache works in LLMs.")
        assert len(short) < 40 <= len(long)
        a = cluster.submit(short, SamplingParams(max_tokens=4, ignore_eos=True))
        b = cluster.submit(long, SamplingParams(max_tokens=4, ignore_eos=True))
        a.result(60), b.result(60)
        assert a.request_id not in cluster.transfers and b.request_id in cluster.transfers
        kinds = {(s.worker, s.kind) for s in cluster.steps}
        assert ("decode-0", "prefill") in kinds and ("prefill-0", "prefill") in kinds


def test_killed_decode_worker_fails_its_requests_clearly_and_router_keeps_serving(chat):
    with Cluster(Topology("disaggregated", prefill_workers=1, decode_workers=1), ENGINE) as cluster:
        streams = [cluster.submit(chat(q), SamplingParams(max_tokens=400, ignore_eos=True)) for q in QUESTIONS]
        while not all(s.token_ids for s in streams):
            time.sleep(0.05)
        os.kill(cluster.pool.workers["decode-0"].process.pid, signal.SIGKILL)
        for s in streams:
            s.result(timeout=30)  # never hangs
            assert s.finish_reason == "error" and "decode-0" in s.error
        with pytest.raises(ClusterError, match="no live decode worker"):
            cluster.submit(chat("hello"), SamplingParams(max_tokens=4))
        assert not leaked_shm_segments()
        # The worker is started again after a back-off, and the cluster serves fully once more.
        deadline = time.time() + 120
        while not all(w.alive for w in cluster.status()) and time.time() < deadline:
            time.sleep(0.2)
        decode = next(w for w in cluster.status() if w.name == "decode-0")
        assert decode.alive and decode.restarts == 1 and "exit code -9" in decode.last_error
        again = cluster.submit(chat("hello"), SamplingParams(max_tokens=4, ignore_eos=True))
        assert again.result(timeout=60) and again.finish_reason == "length"


def test_killed_worker_in_colocated_pair_leaves_the_other_serving(chat):
    with Cluster(Topology("colocated", workers=2), ENGINE, cores=[0, 1]) as cluster:
        victim = cluster.pool.workers["worker-0"]
        os.kill(victim.process.pid, signal.SIGKILL)
        while victim.alive:
            time.sleep(0.05)
        streams = ask_all(cluster, chat, QUESTIONS[:2])
        assert all(s.finish_reason == "length" for s in streams)


def test_bad_requests_are_refused_by_the_router_and_others_continue(chat):
    with Cluster(Topology("disaggregated"), ENGINE) as cluster:
        good = cluster.submit(chat("hi"), SamplingParams(max_tokens=4, ignore_eos=True))
        with pytest.raises(RequestError, match="prompt is empty"):
            cluster.submit("")
        with pytest.raises(RequestError, match="exceeds the limit of 4096 tokens"):
            cluster.submit(list(range(100, 4200)), SamplingParams(max_tokens=4))
        assert good.result(60) and good.finish_reason == "length"


def test_aborting_a_request_frees_its_kv_everywhere(chat):
    with Cluster(Topology("disaggregated"), ENGINE) as cluster:
        s = cluster.submit(chat("Write a very long story."), SamplingParams(max_tokens=500, ignore_eos=True))
        while len(s.token_ids) < 3:
            time.sleep(0.02)
        s.cancel()
        s.result(timeout=30)
        assert s.finish_reason == "abort"
        assert kv_blocks_in_use(cluster) == 0 and not leaked_shm_segments()


@pytest.mark.parametrize("topology,cores,message", [
    (dict(mode="disaggregated", decode_workers=0), None, "at least 1 prefill and 1 decode worker"),
    (dict(mode="disaggregated", prefill_workers=0), None, "at least 1 prefill and 1 decode worker"),
    (dict(mode="colocated", workers=0), None, "at least 1 worker"),
    (dict(mode="disaggregated", prefill_workers=2, decode_workers=2), [0, 1], "needs 4 workers but only 2 CPU"),
    (dict(mode="sideways"), None, "mode must be one of"),
])
def test_invalid_topology_is_a_clear_error(topology, cores, message):
    with pytest.raises(ValueError, match=message):
        Cluster(Topology(**topology), ENGINE, cores=cores, transport="shm")


def test_unknown_transport_is_a_clear_error():
    with pytest.raises(ValueError, match="transport must be one of"):
        Cluster(Topology("disaggregated"), ENGINE, transport="carrier-pigeon")


def test_a_request_cancelled_while_its_prompt_prefills_is_never_decoded(chat):
    # Every prompt goes to the prefill worker; the abort lands while its prefill step runs, so the
    # worker has handed the request off by the time it reads the abort: the router must drop it.
    with Cluster(Topology("disaggregated"), ENGINE) as cluster:
        s = cluster.submit(list(range(1000, 2500)), SamplingParams(max_tokens=600, ignore_eos=True))
        time.sleep(0.5)   # 1500 tokens take seconds to prefill on one core: the step is running
        s.cancel()
        s.result(timeout=30)
        assert s.finish_reason == "abort" and not s.token_ids
        time.sleep(1.0)
        assert kv_blocks_in_use(cluster) == 0 and not leaked_shm_segments()
        assert not any(step.worker == "decode-0" for step in cluster.steps)
