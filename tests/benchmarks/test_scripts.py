"""The benchmark scripts: help text, the GPU script's not-run report, and the PR helpers."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py"))


def load(name: str):
    sys.path.insert(0, str(BENCHMARKS))  # scripts import their neighbours (latency.py)
    try:
        spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), BENCHMARKS / name)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_has_help_with_defaults(script: str) -> None:
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--json" in done.stdout and "usage:" in done.stdout


def test_gpu_benchmark_reports_not_run_without_a_gpu(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the benchmark would run")
    report = tmp_path / "kernel.json"
    assert load("plugin_kernel.py").main(["--json", str(report)]) == 0
    assert json.loads(report.read_text())["status"].startswith("not run")


def test_peak_bandwidth_lookup() -> None:
    module = load("plugin_kernel.py")
    assert module.peak_bandwidth("NVIDIA H100 80GB HBM3") == 3350
    assert module.peak_bandwidth("Orin (nvgpu)") == 204.8
    assert module.peak_bandwidth("Some Future GPU") is None


def test_loop_benchmark_f1_and_plot(tmp_path: Path) -> None:
    module = load("loop_closure.py")
    rows = [{"precision": 1.0, "recall": 0.5, "reported": 10},
            {"precision": 0.5, "recall": 1.0, "reported": 40},
            {"precision": 1.0, "recall": 0.0, "reported": 0}]
    assert module.best_f1(rows) == pytest.approx(2 / 3, abs=1e-4)
    pytest.importorskip("matplotlib")
    png = tmp_path / "pr.png"
    assert module.plot({"a": rows}, png, "test")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_montage_picks_failures_first_then_spreads() -> None:
    module = load("retrieval_montage.py")
    correct = np.array([True] * 10)
    correct[[3, 7]] = False
    assert module.pick_queries(correct, 4, failures=2)[:2] == [3, 7]
    assert module.pick_queries(correct, 3, failures=0) == [0, 4, 9]
    assert len(set(module.pick_queries(correct, 4, failures=5))) == 4
    assert module.middle(["a", "b", "c", "d", "e"]) == "c"
