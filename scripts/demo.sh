#!/usr/bin/env bash
# The main job, end to end on the embedded default (ONNX Runtime CPU, an on-disk map):
#   1. vpr-train init   a model from ImageNet EfficientNet-Lite0 + k-means NetVLAD
#   2. vpr-export       validated FP32 + FP16 ONNX (and an engine if TensorRT is installed)
#   3. vpr-edge map build   a map from one traversal (day_left)
#   4. vpr-edge localize    every frame of the other traversal (day_right): recall, latency
#   5. vpr-edge loops       the route walked twice as one sequence: loop closures, PR curve
# Usage: bash scripts/demo.sh [GARDENS_POINT_DIR] [OUTPUT_DIR]
#   GARDENS_POINT_DIR holds day_left/ and day_right/ (Gardens Point Walking, Zenodo
#   doi 10.5281/zenodo.4590133); default ../shared/data/gardens_point.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-${VPR_EDGE_DATA:-../shared/data}/gardens_point}
OUT=${2:-runs/demo}
BIN=${BIN:-.venv/bin}
if [ ! -d "$DATA/day_left" ] || [ ! -d "$DATA/day_right" ]; then
  echo "demo: $DATA/day_left and $DATA/day_right not found."
  echo "Download Gardens Point Walking (doi 10.5281/zenodo.4590133) and run:"
  echo "  bash scripts/demo.sh /path/to/gardens_point"
  exit 0
fi
mkdir -p "$OUT"
rm -rf "$OUT/map"
set -x
"$BIN/vpr-train" init --images "$DATA/day_left" --output "$OUT/model.pt" --json "$OUT/init.json"
"$BIN/vpr-export" "$OUT/model.pt" --output-dir "$OUT" --fp16 --validate "$DATA/day_left" \
    --validate-images 32 --json "$OUT/export.json"
"$BIN/vpr-edge" map build "$OUT/model.onnx" "$OUT/map" --images "$DATA/day_left" \
    --json "$OUT/map.json"
"$BIN/vpr-edge" localize "$OUT/model.onnx" "$OUT/map" --images "$DATA/day_right" --gt names \
    --json "$OUT/localize.json"
"$BIN/vpr-edge" loops "$OUT/model.onnx" --images "$DATA/day_left" "$DATA/day_right" \
    --gt names --sweep --exclusion-frames 50 --csv "$OUT/loops.csv" --json "$OUT/loops.json"
