#!/usr/bin/env bash
# One prepared run on a lent GPU machine (torch, no jupyter-book/papermill), from the repository
# root, with the offline data mirror copied into .device_data/ (git-ignored, carried):
#   bash benchmarks/device_run.sh BUDGET_SECONDS
# 1. GPU-only correctness checks of the multi-model path, 2. the benchmark, 3. where the fold
# grid's time goes, eager and compiled (stacked_profile.py, ~2-3 min, cut at 4), 4. one
# resumable slice of the `gpu` profile (stops between jobs when the budget is spent), 5. its
# results bundle. Everything lands in $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1 SOFTLIB_DATA=/tmp/softlib-data SOFTLIB_CACHE=/tmp/softlib-cache
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # benchmarks/*.py import softlib from here
budget="${1:-240}"
out="${OUT:-/tmp/out}"
mkdir -p "$out"
python3 .device_data/materialize.py --out "$SOFTLIB_DATA" >/dev/null \
  && python3 -m softlib.data --root "$SOFTLIB_DATA" repack cifar10 >/dev/null || exit 1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 benchmarks/cuda_checks.py --json "$out/cuda_checks.json" 2>&1 | tee "$out/log.txt"
python3 -m softlib.bench --device cuda --json "$out/bench.json" 2>&1 | tee -a "$out/log.txt"
timeout 240 python3 benchmarks/stacked_profile.py --device cuda --compile --json "$out/stacked_profile.json" 2>&1 \
  | grep -v '^USDT\|^ERROR:.*gpuGetDeviceCount' | tee -a "$out/log.txt"
if [ "$budget" -gt 0 ]; then
  # a job started before the deadline may run past it: a hard stop keeps time for the export
  timeout "$((budget + 150))" python3 -m softlib.book compute --profile gpu --budget-seconds "$budget" 2>&1 \
    | tr '\r' '\n' | grep -v '^ *[0-9]*%|' | tee -a "$out/log.txt"
  python3 -m softlib.book export --profile gpu "$out/gpu-slice.tar.gz" 2>&1 | tee -a "$out/log.txt"
fi
ls -la "$out"
