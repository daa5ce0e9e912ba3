"""The cluster planner against NVIDIA's AIConfigurator on the same cases, side by side.

AIConfigurator (PyPI `aiconfigurator`, installed into its own venv under .bench-venvs/, never a
dependency of the lab) estimates each configuration from kernels measured on each GPU for vLLM,
SGLang and TensorRT-LLM, at a fixed batch. For each case it is asked for its best aggregated and
best disaggregated configuration (vLLM backend, H200 SXM); the planner plans the same GPUs, lengths
and SLOs (its best colocated-or-chunked and its best xPyD, from Poisson arrivals with queueing).
Both are timed. The models are given to AIConfigurator as their published config.json (written to a
temporary folder: nothing is downloaded at run time).
Prints a table and writes results/planner_vs_aiconfigurator.json and .md.
  python benchmarks/planner_vs_aiconfigurator.py
"""
from __future__ import annotations

import csv
import json
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.reference_tools import AICONFIGURATOR_VERSION, aiconfigurator_bin  # noqa: E402
from engine.cluster.topology import Mode  # noqa: E402
from lab.planner.hardware import GPUS, MODELS  # noqa: E402
from lab.planner.scenario import SLO, Hardware, Workload  # noqa: E402
from lab.planner.search import PlacementResult, plan_report  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results"

_LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "head_dim": 128, "vocab_size": 128256,
          "max_position_embeddings": 131072, "rope_theta": 500000.0, "rms_norm_eps": 1e-05, "hidden_act": "silu",
          "tie_word_embeddings": False, "torch_dtype": "bfloat16",
          "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                           "original_max_position_embeddings": 8192, "rope_type": "llama3"}}
CONFIGS = {   # the models' published config.json (meta-llama on Hugging Face)
    "Llama-3.1-8B": {**_LLAMA, "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
                     "num_hidden_layers": 32, "num_key_value_heads": 8},
    "Llama-3.1-70B": {**_LLAMA, "hidden_size": 8192, "intermediate_size": 28672, "num_attention_heads": 64,
                      "num_hidden_layers": 80, "num_key_value_heads": 8},
}


@dataclass(frozen=True)
class Case:
    model: str
    gpus: int
    prompt: int
    output: int
    ttft_s: float
    tpot_s: float

    @property
    def label(self) -> str:
        return (f"{self.model}, {self.gpus}x H200, {self.prompt}/{self.output}, "
                f"TTFT {self.ttft_s:g} s, TPOT {1000 * self.tpot_s:g} ms")


CASES = [Case("Llama-3.1-8B", 8, 4000, 500, 1.0, 0.030),
         Case("Llama-3.1-8B", 8, 128, 512, 1.0, 0.030),
         Case("Llama-3.1-70B", 8, 4000, 500, 2.0, 0.050)]


def aiconfigurator(case: Case, folder: Path) -> dict:
    """AIConfigurator's best aggregated and disaggregated rows for the case, and its run time."""
    model = folder / case.model
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text(json.dumps(CONFIGS[case.model]))
    out = folder / f"out-{case.model}-{case.prompt}"
    start = time.perf_counter()
    subprocess.run([aiconfigurator_bin() / "aiconfigurator", "cli", "default", "--model-path", str(model),
                    "--total-gpus", str(case.gpus), "--system", "h200_sxm", "--backend", "vllm",
                    "--isl", str(case.prompt), "--osl", str(case.output), "--ttft", str(1000 * case.ttft_s),
                    "--tpot", str(1000 * case.tpot_s), "--save-dir", str(out), "--no-color"],
                   check=True, capture_output=True)
    seconds = time.perf_counter() - start
    rows = {}
    for kind in ("agg", "disagg"):
        found = list(out.glob(f"*/{kind}/best_config_topn.csv"))
        best = next(csv.DictReader(found[0].open())) if found else None   # ranked by tokens/s/gpu
        rows[kind] = best and {"tokens_per_gpu": float(best["tokens/s/gpu"]), "ttft_ms": float(best["ttft"]),
                               "tpot_ms": float(best["tpot"]), "config": _config(best, kind)}
    return {"seconds": seconds, **rows}


def _config(row: dict, kind: str) -> str:
    if kind == "agg":
        return f"{row['parallel'].split('dp')[0]}, batch {row['bs']}"
    return (f"{row['(p)workers']}P {row['(p)parallel'].split('dp')[0]} + {row['(d)workers']}D "
            f"{row['(d)parallel'].split('dp')[0]}, decode batch {row['(d)bs']}")


def planner(case: Case) -> dict:
    start = time.perf_counter()
    report = plan_report(Hardware(MODELS[case.model], GPUS["H200"]), Workload(1.0, case.prompt, case.output),
                         SLO(case.ttft_s, case.tpot_s), case.gpus)
    seconds = time.perf_counter() - start
    agg = next(r for r in report.results if r.placement.mode != Mode.DISAGGREGATED)
    disagg = next((r for r in report.results if r.placement.mode == Mode.DISAGGREGATED), None)
    return {"seconds": seconds, "agg": _planned(agg), "disagg": disagg and _planned(disagg)}


def _planned(r: PlacementResult) -> dict:
    return {"tokens_per_gpu": r.tokens_per_gpu, "ttft_ms": [1000 * x for x in r.ttft_s],
            "tpot_ms": [1000 * x for x in r.tpot_s], "config": r.placement.label, "at_bound": r.at_bound}


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for case in CASES:
            theirs, ours = aiconfigurator(case, Path(folder)), planner(case)
            rows.append({"case": case.label, "aiconfigurator": theirs, "planner": ours})
            print(f"{case.label}: AIConfigurator {theirs['seconds']:.1f} s, planner {ours['seconds']:.1f} s",
                  flush=True)
    lines = [f"# The planner against AIConfigurator {AICONFIGURATOR_VERSION} (vLLM backend, H200 SXM)", "",
             f"Machine: {platform.platform()}, {platform.machine()}. AIConfigurator: its best configuration of each "
             "kind at a fixed batch (mean TTFT, TPOT). Planner: its best placement of each kind under Poisson "
             "arrivals at its goodput rate (TTFT and TPOT P50 / P90).", "",
             "| case | kind | AIConfigurator | tok/s/GPU | TTFT ms | TPOT ms | planner | tok/s/GPU | "
             "TTFT ms P50/P90 | TPOT ms P50/P90 | planner / AIC | search s (AIC / planner) |",
             "|---" * 12 + "|"]
    for row in rows:
        theirs, ours = row["aiconfigurator"], row["planner"]
        for kind, name in (("agg", "aggregated"), ("disagg", "disaggregated")):
            t, o = theirs.get(kind), ours.get(kind)
            if not (t and o):
                continue
            bound = " (hardware bound)" if o["at_bound"] else ""
            lines.append(f"| {row['case']} | {name} | {t['config']} | {t['tokens_per_gpu']:.0f} | {t['ttft_ms']:.0f} | "
                         f"{t['tpot_ms']:.1f} | {o['config']}{bound} | {o['tokens_per_gpu']:.0f} | "
                         f"{o['ttft_ms'][0]:.0f} / {o['ttft_ms'][1]:.0f} | "
                         f"{o['tpot_ms'][0]:.1f} / {o['tpot_ms'][1]:.1f} | "
                         f"{o['tokens_per_gpu'] / t['tokens_per_gpu']:.2f} | "
                         f"{theirs['seconds']:.1f} / {ours['seconds']:.1f} |")
    table = "\n".join(lines) + "\n"
    print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "planner_vs_aiconfigurator.md").write_text(table)
    (RESULTS / "planner_vs_aiconfigurator.json").write_text(json.dumps(
        {"aiconfigurator_version": AICONFIGURATOR_VERSION, "machine": platform.platform(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
