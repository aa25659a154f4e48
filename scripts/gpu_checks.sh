#!/usr/bin/env bash
# Every check that needs a CUDA GPU, in one run: the tests marked `gpu`, then the two GPU
# benchmarks. Run it on a machine with a GPU, PyTorch, Triton and cuda-python, with vpr-edge
# installed (not imported from this checkout: the package maps training/ and export/ in).
#
#   bash scripts/gpu_checks.sh [OUTPUT_DIR]     # default: runs/gpu_checks
#
# Writes OUTPUT_DIR/gpu_tests.log, plugin_kernel.json and gpu_latency.json.
set -uo pipefail
out=${1:-runs/gpu_checks}
mkdir -p "$out" && out=$(cd "$out" && pwd)
python=$(command -v "${PYTHON:-python3}")
case $python in /*) ;; *) python=$PWD/$python ;; esac  # the benchmarks run from benchmarks/
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
# -P: the checkout's vpr_edge/ must not shadow the installed package
PYTHONUNBUFFERED=1 "$python" -P -m pytest -m gpu -p no:cacheprovider -rA \
    --continue-on-collection-errors tests/ 2>&1 \
    | tee "$out/gpu_tests.log"
status=$?
cd benchmarks || exit 1
PYTHONUNBUFFERED=1 "$python" plugin_kernel.py --json "$out/plugin_kernel.json"
PYTHONUNBUFFERED=1 "$python" gpu_latency.py --json "$out/gpu_latency.json"
exit $status
