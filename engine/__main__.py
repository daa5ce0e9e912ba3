"""Command line: `python -m engine generate "prompt"`, `bench ...` and `serve --mode ... --port 8000`."""
from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time

from .cluster.cluster import Cluster
from .cluster.shutdown import exit_on_signals
from .cluster.topology import Mode, Topology
from .cluster.transports import TRANSPORTS
from .core.config import EngineConfig, Policy, RequestError, SamplingParams
from .core.disk_tier import clear as clear_kv_store
from .core.llm_engine import LLMEngine
from .core.model_loader import ModelLoadError
from .core.run_files import save_run
from .metrics import SLO, Timing, format_summary, summarize
from .server.app import MAX_BODY_BYTES
from .server.app import serve as run_server


def model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="bundled", help="'bundled', a Hugging Face id, or a local folder")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--chunk-size", type=int, default=256)
    p.add_argument("--kv-cache-tokens", type=int, default=16384)
    p.add_argument("--compile-decode", action="store_true",
                   help="compile the decode step at start (CPU: 25-40%% faster steps on an AVX2 EPYC, by CPU "
                        "and batch, see docs/usage.md; ~2.5 min to compile)")


def engine_args(p: argparse.ArgumentParser) -> None:
    """One engine in this process. (A served cluster takes its policy from --mode and its threads
    from the cores each worker gets, so `serve` has neither option.)"""
    model_args(p)
    p.add_argument("--policy", default=Policy.PREFILL_FIRST, choices=list(Policy))
    p.add_argument("--threads", type=int, default=None)


def make_engine(a: argparse.Namespace) -> LLMEngine:
    return LLMEngine(EngineConfig(model=a.model, device=a.device, dtype=a.dtype, policy=a.policy,
                                  chunk_size=a.chunk_size, kv_cache_tokens=a.kv_cache_tokens, threads=a.threads,
                                  compile_decode=a.compile_decode))


def generate(a: argparse.Namespace) -> None:
    engine = make_engine(a)
    prompt = a.prompt if a.raw else [{"role": "user", "content": a.prompt}]
    params = SamplingParams(max_tokens=a.max_tokens, temperature=a.temperature, top_p=a.top_p, seed=a.seed,
                            stop=a.stop or [])
    rid = engine.add_request(prompt, params)
    while engine.has_work:
        for e in engine.step():
            sys.stdout.write(e.text)
            sys.stdout.flush()
    rec = engine.finished[-1]
    print(f"\n[{rec.output_tokens} tokens, TTFT {1000 * (rec.first_token - rec.arrival):.0f} ms, "
          f"finish: {rec.finish_reason}, id {rid}]", file=sys.stderr)


def synthetic_prompt(engine: LLMEngine, num_tokens: int, rng: random.Random) -> list[int]:
    """Token ids of ordinary words: a prompt of an exact length, different per request."""
    words = "the a model token cache prefill decode server user latency memory compute stream".split()
    text = " ".join(rng.choice(words) for _ in range(num_tokens))
    return engine.encode(text)[:num_tokens]


def bench(a: argparse.Namespace) -> None:
    engine = make_engine(a)
    rng = random.Random(a.seed)
    params = SamplingParams(max_tokens=a.output_len, ignore_eos=True)
    prompts = [synthetic_prompt(engine, a.prompt_len, rng) for _ in range(a.num_requests)]
    start = time.perf_counter()
    for ids in prompts:
        engine.add_request(ids, params, arrival=start)
    while engine.has_work:
        engine.step()
    timings = [Timing(r.arrival, r.token_times, ok=r.error is None) for r in engine.finished]
    print(format_summary(summarize(timings, slo=SLO(ttft=a.slo_ttft, tpot=a.slo_tpot))))
    meta = {"command": "bench", "args": vars(a), "model": engine.loaded.name, "device": str(engine.loaded.device),
            "dtype": str(engine.loaded.dtype), "machine": platform.platform(), "processor": platform.processor()}
    folder = save_run(a.out, engine.finished, engine.steps, meta)
    print(f"records written to {folder}/")


def serve(a: argparse.Namespace) -> None:
    topology = Topology(a.mode, a.prefill_workers, a.decode_workers, a.workers, a.device)
    if a.kv_store_clear:
        if not a.kv_store_folder:
            raise ValueError("--kv-store-clear needs --kv-store-folder: the folder to clear")
        print(f"KV store: removed {clear_kv_store(a.kv_store_folder)} files from {a.kv_store_folder}", file=sys.stderr)
    config = EngineConfig(model=a.model, dtype=a.dtype, chunk_size=a.chunk_size, kv_cache_tokens=a.kv_cache_tokens,
                          compile_decode=a.compile_decode, prefix_cache_tokens=a.prefix_cache_tokens,
                          prefix_cache_ttl_s=a.prefix_cache_ttl, kv_store_folder=a.kv_store_folder,
                          kv_store_bytes=a.kv_store_bytes, kv_store_ttl_s=a.kv_store_ttl)
    threshold = a.conditional_threshold if a.conditional_threshold > 0 else None
    with exit_on_signals(), Cluster(topology, config, a.transport, conditional_threshold=threshold) as cluster:
        for w in cluster.status():
            print(f"{w.name}: {w.role} on {w.device} ({w.detail})", file=sys.stderr)
        if cluster.note:
            print(f"note: {cluster.note}", file=sys.stderr)
        run_server(cluster, a.host, a.port, a.max_body_bytes, a.api_key or None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="stream one answer")
    g.add_argument("prompt")
    g.add_argument("--raw", action="store_true", help="send the text as is, without the chat template")
    g.add_argument("--max-tokens", type=int, default=128)
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--stop", action="append")
    engine_args(g)
    b = sub.add_parser("bench", help="N concurrent requests; prints a metric table, writes records")
    b.add_argument("--num-requests", type=int, default=8)
    b.add_argument("--prompt-len", type=int, default=128)
    b.add_argument("--output-len", type=int, default=64)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--slo-ttft", type=float, default=1.0, help="seconds")
    b.add_argument("--slo-tpot", type=float, default=0.05, help="seconds")
    b.add_argument("--out", default="runs/bench")
    engine_args(b)
    s = sub.add_parser("serve", help="OpenAI-compatible HTTP server over worker processes")
    s.add_argument("--mode", default=Mode.COLOCATED, choices=list(Mode))
    s.add_argument("--workers", type=int, default=1, help="colocated / chunked workers")
    s.add_argument("--prefill-workers", type=int, default=1)
    s.add_argument("--decode-workers", type=int, default=1)
    s.add_argument("--transport", default="shm", choices=list(TRANSPORTS))
    s.add_argument("--conditional-threshold", type=int, default=1000,
                   help="prefill prompts shorter than this on a decode worker (0: never)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES,
                   help="larger request bodies get 413 before they are read (default 4 MiB)")
    s.add_argument("--api-key", default=os.environ.get("PDLAB_API_KEY"),
                   help="require 'Authorization: Bearer KEY' on /v1 requests, as vLLM's --api-key "
                        "(default: $PDLAB_API_KEY; none: open)")
    s.add_argument("--prefix-cache-tokens", type=int, default=0,
                   help="keep prompt prefixes' KV in each worker's memory, up to this many tokens (0: off)")
    s.add_argument("--prefix-cache-ttl", type=float, default=300.0, help="...for this many seconds after last use")
    s.add_argument("--kv-store-folder", default=None,
                   help="the prefix cache's disk tier: a folder every worker shares, kept across restarts")
    s.add_argument("--kv-store-bytes", type=int, default=4 << 30, help="its bound (default 4 GiB)")
    s.add_argument("--kv-store-ttl", type=float, default=86400.0,
                   help="a block unused this many seconds is dropped (default a day)")
    s.add_argument("--kv-store-clear", action="store_true", help="empty the KV store folder before starting")
    model_args(s)
    a = parser.parse_args(argv)
    try:
        {"generate": generate, "bench": bench, "serve": serve}[a.command](a)
    except (RequestError, ModelLoadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
