"""Does the server's published schema tell the truth? Schemathesis reads /openapi.json, generates
requests the schema calls valid and invalid, and judges each answer with its default checks (valid
requests accepted, invalid ones refused, every status, content type and body as documented, no 5xx).

    python benchmarks/api_schema.py [--max-examples 5] [--seed 0]

Installs schemathesis into .bench-venvs/schemathesis on first use (never a dependency of the lab).
Prints a table (endpoint, cases, failures), writes results/api_schema.json and results/api_schema.md,
and exits non-zero if schemathesis found anything.

Two things are set for this run, both stated in the results:
- Schema-valid requests that break a rule JSON Schema cannot state (prompt + max_tokens over the
  context: a text's token count depends on the tokenizer; min_tokens over max_tokens) are refused with
  400, as documented. Schemathesis's own advice for such rules is to allow that status for the
  operation (the two generating ones); the `runtime_rules_only` check added here then fails any 400 on
  valid data whose message is not one of those rules, so nothing else hides behind it.
- Generation is what takes time, not what is checked: n, max_tokens and min_tokens that the schema
  calls valid are lowered to at most CAP before sending, and a request with no max_tokens gets CAP's
  (a valid body stays valid; an invalid value is sent as generated).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.reference_tools import _venv, pdlab_server  # noqa: E402

RESULTS = ROOT / "results"
SCHEMATHESIS_VERSION = "4.32.5"
# A small KV cache: the schema then allows at most 255 answer tokens, and a prompt of at most 255 token ids.
KV_CACHE_TOKENS = 256
CAP = {"n": 2, "max_tokens": 4, "max_completion_tokens": 4, "min_tokens": 2}
RUNTIME_RULES = {   # what a 400 on schema-valid data may say: the rules the schema cannot state
    "prompt + max_tokens over the context": r"exceeds the limit of \d+ tokens",
    "min_tokens over max_tokens": r"min_tokens must be between 0 and max_tokens",
}
GENERATING = ["/v1/completions", "/v1/chat/completions"]   # where those rules apply

HOOKS = '''
"""Loaded by schemathesis (SCHEMATHESIS_HOOKS); written by benchmarks/api_schema.py."""
import json
import re

import schemathesis

LIMITS = json.loads({limits!r})   # name: (least valid, most valid, cap)
RULES = [re.compile(p) for p in json.loads({rules!r})]
CALLS = {calls!r}   # one line per request sent: its operation


@schemathesis.hook
def before_call(context, case, kwargs):
    with open(CALLS, "a") as calls:
        calls.write(case.operation.label + "\\n")
    body = case.body
    if isinstance(body, dict) and case.path in ("/v1/completions", "/v1/chat/completions"):
        for name, (least, most, cap) in LIMITS.items():
            value = body.get(name)
            if type(value) is int and least <= value <= most:   # valid stays valid; invalid is left alone
                body[name] = min(value, cap)
        if body.get("max_tokens") is None and body.get("max_completion_tokens") is None:
            body["max_tokens"] = LIMITS["max_tokens"][2]   # else the answer may fill the context


@schemathesis.check
def runtime_rules_only(ctx, response, case):
    """A 400 on schema-valid data must name a rule the schema cannot state."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 400:
        return None
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        raise AssertionError("a 400 without an OpenAI error body")
    if not any(rule.search(message) for rule in RULES):
        raise AssertionError(f"schema-valid request refused for a reason the schema could state: {{message}}")
    return None
'''

CONFIG = '''
# Written by benchmarks/api_schema.py. Schema-valid requests to these operations may get 400 for a rule
# JSON Schema cannot state; the hooks' runtime_rules_only check judges each such 400.
{operations}
'''


def schemathesis_bin() -> Path:
    return _venv("schemathesis", [f"schemathesis=={SCHEMATHESIS_VERSION}"])


def run_schemathesis(st: Path, base: str, work: Path, max_examples: int, seed: int) -> tuple[int, str]:
    most = KV_CACHE_TOKENS - 1
    limits = {name: (1 if name in ("n", "max_tokens", "max_completion_tokens") else 0,
                     128 if name == "n" else most, cap) for name, cap in CAP.items()}
    (work / "api_schema_hooks.py").write_text(HOOKS.format(limits=json.dumps(limits), calls=str(work / "calls"),
                                                           rules=json.dumps(list(RUNTIME_RULES.values()))))
    allowed = '["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]'   # schemathesis's list + 400
    (work / "schemathesis.toml").write_text(CONFIG.format(operations="\n".join(
        f'[[operations]]\ninclude-path = "{path}"\nchecks.positive_data_acceptance.expected-statuses = {allowed}\n'
        for path in GENERATING)))
    env = {**os.environ, "PYTHONPATH": str(work), "SCHEMATHESIS_HOOKS": "api_schema_hooks", "NO_COLOR": "1"}
    command = [str(st / "schemathesis"), "--config-file", str(work / "schemathesis.toml"), "run",
               f"{base}/openapi.json", "--max-examples", str(max_examples), "--seed", str(seed), "--workers", "1",
               "--request-timeout", "120", "--output-sanitize", "false",   # nothing secret; token counts shown
               "--continue-on-failure",   # one failure per operation would hide the next
               "--report", "junit", "--report-dir", str(work / "report")]
    print("$", " ".join(command), flush=True)
    done = subprocess.run(command, env=env, cwd=work, capture_output=True, text=True)
    print(done.stdout[-6000:], done.stderr[-2000:], sep="\n", flush=True)
    return done.returncode, done.stdout


def per_operation(work: Path) -> list[dict]:
    """Requests sent (the hooks count them) and failures (schemathesis's JUnit report: one test case per
    operation, each failure found numbered by its test case id) per operation."""
    import xml.etree.ElementTree as ET
    calls = Counter((work / "calls").read_text().split("\n")) if (work / "calls").exists() else Counter()
    rows = []
    for case in ET.parse(next((work / "report").glob("*.xml"))).getroot().iter("testcase"):
        failures = case.findall("failure") + case.findall("error")
        text = "\n".join((f.get("message") or "") + "\n" + (f.text or "") for f in failures).strip()
        found = max(len(failures), len(re.findall(r"Test Case ID:", text)))
        rows.append({"endpoint": case.get("name"), "cases": calls[case.get("name")], "failures": found,
                     "found": what_failed(text), "detail": text[:4000]})
    return rows


def what_failed(detail: str) -> list[str]:
    """Each failure in a JUnit entry in one line: the check, and the status and body that failed it."""
    checks = re.findall(r"^- (ST\d+ [^\n]+)", detail, re.M)
    answers = re.findall(r"^\[(\d{3})\][^\n]*\n\n\s*`([^\n]{0,240})", detail, re.M)
    return [f"{check}: {status} {body.rstrip('`')}" for check, (status, body) in zip(checks, answers)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-examples", type=int, default=5, help="schemathesis's cases per operation and phase")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    st = schemathesis_bin()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, \
            pdlab_server("--kv-cache-tokens", str(KV_CACHE_TOKENS)) as base:
        work = Path(tmp)
        code, out = run_schemathesis(st, base, work, a.max_examples, a.seed)
        rows = per_operation(work)
    total = re.search(r"(\d+) generated", out)
    summary = {"schemathesis": SCHEMATHESIS_VERSION, "exit_code": code, "seed": a.seed,
               "max_examples": a.max_examples, "kv_cache_tokens": KV_CACHE_TOKENS, "cap": CAP,
               "runtime_rules": RUNTIME_RULES, "generated": int(total.group(1)) if total else None,
               "seconds": round(time.monotonic() - started),
               "machine": f"{platform.platform()}, {os.cpu_count()} CPUs", "rows": rows}
    table = "\n".join([
        "# The published schema against the server (schemathesis, default checks)", "",
        f"schemathesis {SCHEMATHESIS_VERSION} `run` on /openapi.json, default checks plus runtime_rules_only, "
        f"--max-examples {a.max_examples} --seed {a.seed}; server: `python -m engine serve --kv-cache-tokens "
        f"{KV_CACHE_TOKENS}` (bundled model). {summary['generated']} cases generated, "
        f"{summary['seconds']} s, exit code {code}. Machine: {summary['machine']}.", "",
        "On the two generation endpoints only, schema-valid requests may be refused with 400, and only for: "
        + "; ".join(RUNTIME_RULES) +
        f" (JSON Schema cannot state these). Valid n, max_tokens, min_tokens are lowered to {CAP} before sending, "
        "to keep generation short.", "",
        "| endpoint | cases (requests sent) | failures |", "|---|---|---|",
        *(f"| {r['endpoint']} | {r['cases']} | {r['failures']} |" for r in rows), "",
        *(f"- {r['endpoint']}: {line}" for r in rows for line in r["found"]), ""])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "api_schema.json").write_text(json.dumps(summary, indent=2) + "\n")
    (RESULTS / "api_schema.md").write_text(table)
    print(table)
    sys.exit(0 if code == 0 and not any(r["failures"] for r in rows) else 1)


if __name__ == "__main__":
    main()
