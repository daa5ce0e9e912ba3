#!/usr/bin/env bash
# The engine on a GPU machine, in one short run (4.5 minutes on one H200).
# Each step has its own time limit and a failed step does not stop the others; every log and result lands
# in one archive, $OUT/gpu_check.tgz (default OUT=results/gpu), with failures.txt naming the steps that
# failed. BUDGET_S (default 900) bounds the whole run: a step gets what is left of it, so the archive is
# always written. In order of what each tells:
#   1. the model-level tests on the GPU: greedy tokens equal model.generate's (fp32), bf16 within its tolerance
#   2. engine_bench in bf16: decode step by batch, prefill speed, batching gain, ITL, and how much of a
#      decode step the GPU's kernels fill (the rest is the host: Python and kernel launches)
#   3. the seed experiment colocated, then disaggregated over shm (two workers sharing one GPU)
#   4. one prompt's KV moved over every transport that works there (nixl: VRAM registered, CUDA IPC)
#   5. the seed experiment disaggregated over nixl, and engine_bench in fp32 (--quick)
# Needs the lab's packages and the bundled model installed, as `make lab` does.
#   OUT=results/gpu bash tools/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-results/gpu}
py=${PYTHON:-.venv/bin/python}
work=$(mktemp -d)
end=$((SECONDS + ${BUDGET_S:-900} - 15))   # 15 s kept for the archive
mkdir -p "$out" "$work/results"
step() {   # step NAME SECONDS COMMAND...: its output to NAME.log, a failure or timeout to failures.txt
  local name=$1 limit=$2 left=$((end - SECONDS)); shift 2
  if [ $left -lt 20 ]; then echo "$name: skipped, out of time" | tee -a "$work/failures.txt"; return; fi
  [ $limit -lt $left ] || limit=$left
  echo "== $name ($(date +%T), up to $limit s)"
  timeout --kill-after=10 "$limit" "$@" > "$work/$name.log" 2>&1
  local rc=$?
  [ $rc -eq 0 ] || echo "$name: exit $rc" | tee -a "$work/failures.txt"
  tail -4 "$work/$name.log"
}
seed() {   # seed MODE TRANSPORT: the seed experiment, its runs saved beside the logs
  step "seed-$1-$2" 120 "$py" -m lab.run_experiment --mode "$1" --transport "$2" --long-prompt-tokens 4000 \
    --out "$work/results/seed-$1-$2"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$work/gpu.csv"
"$py" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
  | tee "$work/versions.txt"
step model 120 "$py" -c "from engine.core.model_loader import bundled_model_folder as f; print(f())"
step tests 150 env PDLAB_TEST_DEVICE=cuda "$py" -m pytest -q -p no:cacheprovider \
  tests/test_greedy_matches_generate.py tests/test_bf16_vs_fp32.py
step bench_bf16 150 "$py" benchmarks/engine_bench.py --device cuda --dtype bfloat16
seed colocated shm
seed disaggregated shm
step transfers 120 "$py" -c "import json; from lab.lesson_experiments import measure_transports as m; \
print(json.dumps(m(), indent=1))"
seed disaggregated nixl
step bench_fp32 120 "$py" benchmarks/engine_bench.py --device cuda --dtype float32 --quick
cp results/engine_bench_*_gpu.* "$work/results/" 2>/dev/null
tar czf "$out/gpu_check.tgz" -C "$work" .
rm -rf "$work"
echo "results in $out/gpu_check.tgz"
