#!/usr/bin/env bash
# Re-run every benchmark whose figures the READMEs quote; results land in benchmarks/results/.
# Usage: bash benchmarks/reproduce.sh [--quick]   (--quick: skips training and the big maps;
# how long each part takes: benchmarks/README.md)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
out=benchmarks/results
mkdir -p "$out" runs
$PY benchmarks/latency.py --json "$out/latency.json" \
    --backbones efficientnet_lite0 mobilenetv3_large_100 resnet18 resnet50 vgg16
$PY benchmarks/loop_closure.py --json "$out/loop_closure.json" --plot "$out/loop_closure_pr.png"
$PY benchmarks/retrieval_montage.py --plot "$out/corridor_montage.png" --json "$out/corridor_montage.json"
$PY benchmarks/preprocess_layouts.py --json "$out/preprocess_layouts.json"
# GPU benchmarks (plugin_kernel.py, gpu_latency.py) run on a GPU machine: scripts/gpu_checks.sh
if [ "${1:-}" = "--quick" ]; then
  $PY benchmarks/index_scaling_quick.py --sizes 10000 --dims 512 --efs 64 128 --queries 300 \
      --json "$out/index_scaling_10k_faiss.json"
  exit 0
fi
$PY benchmarks/index_scaling_quick.py --json "$out/index_scaling_quick.json"
$PY benchmarks/real_route.py --output runs/real_descriptors.npy --json "$out/real_route.json"
$PY benchmarks/index_scaling_quick.py --sizes 10000 100000 1000000 --dims 512 \
    --synthesise-from runs/real_descriptors.npy --json "$out/index_scaling_1m.json" \
    --plot "$out/index_scaling.png"
$PY benchmarks/index_scaling_quick.py --sizes 10000 100000 --dims 512 --efs 128 192 \
    --synthesise-from runs/real_descriptors.npy --json "$out/index_scaling_ef192.json"
$PY benchmarks/index_scaling_quick.py --sizes 10000 100000 --dims 400 --lift \
    --synthesise-from runs/real_descriptors.npy --graph default \
    --json "$out/index_scaling_default_7168.json"
$PY benchmarks/insertion_order.py --descriptors runs/real_descriptors.npy \
    --json "$out/insertion_order.json"
$PY benchmarks/insertion_order.py --descriptors runs/real_descriptors.npy --places 100000 \
    --json "$out/insertion_order_100k.json"
$PY benchmarks/runtime_memory.py --json "$out/runtime_memory.json"
$PY benchmarks/training_recall.py --epochs 5 --json "$out/training_recall.json"
$PY benchmarks/accuracy_matrix.py --json "$out/accuracy_matrix.json"
