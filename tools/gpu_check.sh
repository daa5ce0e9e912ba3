#!/usr/bin/env bash
# The nixl transport on a GPU machine, in one short run: the KV pools are registered as VRAM and UCX
# takes CUDA IPC (NVLink where the GPUs have it) between the two workers. Runs the seed experiment
# colocated and disaggregated over nixl and over shm, and measures every transport; everything lands
# in $OUT (default results/gpu). Needs the lab's packages and the bundled model installed, as
# `make lab` does; with one GPU the two workers share it (the dashboard says so).
#   OUT=results/gpu bash tools/gpu_nixl_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-results/gpu}
py=${PYTHON:-.venv/bin/python}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.csv"
"$py" -c "from engine.cluster.transports import available_transports as a; print(a())" | tee "$out/transports.txt"
for run in "colocated shm" "disaggregated nixl" "disaggregated shm"; do
  set -- $run
  "$py" -m lab.run_experiment --mode "$1" --transport "$2" --long-prompt-tokens 4000 \
    > "$out/seed-$1-$2.json"
done
"$py" -c "import json; from lab.lesson_experiments import measure_transports; print(json.dumps(measure_transports(), indent=1))" \
  > "$out/transfers.json"
echo "results in $out/"
