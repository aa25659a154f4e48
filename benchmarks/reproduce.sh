#!/usr/bin/env bash
# Re-run every benchmark whose figures the READMEs quote; results land in benchmarks/results/.
# Usage: bash benchmarks/reproduce.sh [--quick]   (--quick: skips training, ~5 min; else ~40 min)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
out=benchmarks/results
mkdir -p "$out"
$PY benchmarks/latency.py --json "$out/latency.json" \
    --backbones efficientnet_lite0 mobilenetv3_large_100 resnet18 resnet50 vgg16
$PY benchmarks/loop_closure.py --json "$out/loop_closure.json" --plot "$out/loop_closure_pr.png"
$PY benchmarks/retrieval_montage.py --plot "$out/corridor_montage.png" --json "$out/corridor_montage.json"
$PY benchmarks/plugin_kernel.py --json "$out/plugin_kernel.json"
if [ "${1:-}" = "--quick" ]; then
  $PY benchmarks/index_scaling_quick.py --sizes 10000 --dims 512 --efs 64 128 --queries 300 \
      --json "$out/index_scaling_10k_faiss.json"
else
  $PY benchmarks/index_scaling_quick.py --json "$out/index_scaling_quick.json"
  $PY benchmarks/training_recall.py --epochs 5 --json "$out/training_recall.json"
fi
