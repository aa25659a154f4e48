#!/usr/bin/env bash
# Every check that needs a CUDA GPU, in one run: the tests marked `gpu`, then the GPU
# benchmarks. Run it on a machine with a GPU, PyTorch, Triton and cuda-python, with vpr-edge
# installed (not imported from this checkout: the package maps training/ and export/ in), and
# onnxruntime-gpu and/or TensorRT for the backends.
#
#   bash scripts/gpu_checks.sh [OUTPUT_DIR [MODEL...]]     # default: runs/gpu_checks, no model
#
# Writes OUTPUT_DIR/gpu_tests.log, plugin_kernel.json, gpu_latency.json, and for each MODEL
# (an exported .onnx or .engine) backend_latency_<name>.json: its GPU backend's latency and
# Localizer.query breakdown (benchmarks/backend_latency.py). An .engine given as MODEL is also
# the engine of the real-engine test (VPR_EDGE_TEST_ENGINE), an .onnx its reference.
set -uo pipefail
out=${1:-runs/gpu_checks}
mkdir -p "$out" && out=$(cd "$out" && pwd)
models=()
for model in "${@:2}"; do
    models+=("$(cd "$(dirname "$model")" && pwd)/$(basename "$model")")
    case $model in
        *.engine) export VPR_EDGE_TEST_ENGINE=${models[-1]} ;;
        *.onnx) export VPR_EDGE_TEST_ONNX=${models[-1]} ;;
    esac
done
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
for model in "${models[@]}"; do
    name=$(basename "$model"); name=${name//./_}
    PYTHONUNBUFFERED=1 "$python" backend_latency.py "$model" --json "$out/backend_latency_$name.json"
done
exit $status
