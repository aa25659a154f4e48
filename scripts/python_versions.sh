#!/usr/bin/env bash
# The runtime's tests on other Python versions than CI's, as a robot installs vpr-edge: for
# each interpreter, a fresh venv with `.[cpu,verify,ros]` (no torch) plus onnx (the tests'
# tiny model), pytest and hypothesis, then tests/vpr_edge, tests/reliability and
# tests/test_doc_examples.py run from outside the checkout (so the installed package is
# tested, not this folder). Not part of CI, which runs Python 3.11 only.
#
#   bash scripts/python_versions.sh [PYTHON...]   # default: pyenv's 3.10, 3.12 and 3.13
#
# JetPack 6 runs Python 3.10; Ubuntu 24.04 (ROS 2 Jazzy) 3.12. Prints one line per version
# and exits non-zero if any failed.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
pythons=("$@")
if [ ${#pythons[@]} -eq 0 ]; then
    for v in 3.10 3.12 3.13; do
        found=$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}/versions/$v".*/bin/python 2>/dev/null | tail -1)
        if [ -n "$found" ]; then pythons+=("$found"); else echo "Python $v: not found (skipped)"; fi
    done
fi
work=$(mktemp -d)
trap 'rm -rf "$work" "$repo/build"' EXIT
status=0
results=()
for python in "${pythons[@]}"; do
    version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])') || {
        results+=("$python: cannot run"); status=1; continue; }
    venv=$work/py$version
    echo "== Python $version ($python): installing"
    if ! { "$python" -m venv "$venv" \
            && "$venv/bin/pip" install -q "$repo[cpu,verify,ros]" onnx pytest hypothesis; }; then
        results+=("Python $version: install failed"); status=1; continue
    fi
    echo "== Python $version: tests"
    (cd "$work" && "$venv/bin/python" -m pytest -q -p no:cacheprovider --rootdir "$repo" \
        -c "$repo/pyproject.toml" "$repo/tests/vpr_edge" "$repo/tests/reliability" \
        "$repo/tests/test_doc_examples.py") > "$work/log$version" 2>&1
    code=$?
    tail -3 "$work/log$version"
    results+=("Python $version: $(tail -1 "$work/log$version")")
    [ $code -eq 0 ] || status=1
done
printf '%s\n' "${results[@]}"
exit $status
