#!/usr/bin/env bash
# Set up the development environment in .venv (everything a developer needs), then run the
# main job. Usage: bash scripts/setup.sh [--no-demo]
#   PYTHON=python3.11          interpreter for the venv (default: python3)
#   TORCH_PACKAGES="..."       torch pins (default: the CPU-usable build this project tests)
set -euo pipefail
cd "$(dirname "$0")/.."

run_demo=1
for arg in "$@"; do
  case "$arg" in
    --no-demo) run_demo=0 ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

PYTHON=${PYTHON:-python3}
# timm needs torchvision; torch 2.14.1 + torchvision 0.29.1 is the pair available here.
TORCH_PACKAGES=${TORCH_PACKAGES:-"torch==2.14.1 torchvision==0.29.1"}

step() { printf '\n==> %s\n' "$*"; }

step "creating .venv with $($PYTHON --version)"
"$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install --quiet --upgrade pip

step "installing $TORCH_PACKAGES"
# shellcheck disable=SC2086
$PIP install --quiet $TORCH_PACKAGES

step "installing vpr-edge (editable) with extras cpu, train, export, verify, ros, dev"
$PIP install --quiet -e ".[cpu,train,export,verify,ros,dev]"

step "installing TensorRT-RTX (builds engines without a GPU; used by the export tests)"
$PIP install --quiet "tensorrt-rtx-cu13" || echo "TensorRT-RTX not installable here: engine tests will skip"

if [ "$run_demo" = 1 ]; then
  step "running the main job (scripts/demo.sh)"
  bash scripts/demo.sh
fi
step "done: run the tests with  .venv/bin/python -m pytest"
