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
        sys.modules[spec.name] = module  # dataclasses look their module up there
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


@pytest.mark.parametrize("script", ["plugin_kernel.py", "gpu_latency.py"])
def test_gpu_benchmarks_report_not_run_without_a_gpu(script: str, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the benchmark would run")
    report = tmp_path / "gpu.json"
    assert load(script).main(["--json", str(report)]) == 0
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


def test_route_from_real_keeps_the_real_spectrum() -> None:
    module = load("real_route.py")
    rng = np.random.default_rng(0)
    # a "real" route: a random walk (neighbouring frames alike) with 3 strong directions
    steps = rng.standard_normal((200, 64)) * np.r_[[10.0, 8.0, 6.0], np.full(61, 0.5)]
    real = np.cumsum(steps, axis=0)
    rows = module.route_from_real(1000, real, 16, seed=1)
    assert rows.shape == (1000, 16) and rows.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    variance = rows.var(axis=0)
    assert variance[:3].sum() > 0.8 * variance.sum()  # PCA order and spectrum survive
    consecutive = np.einsum("ij,ij->i", rows[1:200], rows[:199]).mean()
    assert consecutive > 0.9  # a route: neighbouring frames look alike
    with pytest.raises(ValueError, match="more than 16"):
        module.route_from_real(10, real[:16], 16)


def test_runtime_memory_reports_every_step(tmp_path: Path, tiny_onnx: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # it imports a neighbour script when run
    report = tmp_path / "memory.json"
    module = load("runtime_memory.py")
    assert module.main(["--model", str(tiny_onnx), "--places", "3000", "--queries", "2",
                        "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["places"] == 3000 and result["torch_imported"] is False
    steps = result["steps"]
    assert list(steps) == ["python + numpy", "import vpr_edge", "model opened",
                           "model + map opened", "after queries"]
    assert steps["model + map opened"]["VmRSS"] > steps["python + numpy"]["VmRSS"] > 0


def test_vprbench_recalls_from_the_shipped_results(corridor_dir: Path) -> None:
    rows = {r["method"]: r for r in load("accuracy_matrix.py").vprbench_recalls(corridor_dir)}
    assert rows["NetVLAD"]["recall@1"] == pytest.approx(0.676, abs=1e-3)  # data/README.md
    assert rows["HybridNet"]["recall@1"] == pytest.approx(0.901, abs=1e-3)
    for row in rows.values():
        assert row["recall@1"] <= row.get("recall@5", 1) <= row.get("recall@10", 1) <= 1


def test_insertion_order_runs_small_and_writes_json(tmp_path: Path) -> None:
    """A tiny run of the insertion-order study: every graph is measured at every ef, and
    recall is a fraction of the held-out queries."""
    module = load("insertion_order.py")
    rng = np.random.default_rng(0)
    real = np.cumsum(rng.standard_normal((120, 600)).astype(np.float32), axis=0)
    lifted = module.lifted_route(real, 50, 20, seed=1)
    assert lifted.shape == (50, 600)
    np.testing.assert_allclose(np.linalg.norm(lifted, axis=1), 1.0, atol=1e-5)
    path = tmp_path / "real.npy"
    np.save(path, real)
    out = tmp_path / "order.json"
    assert module.main(["--descriptors", str(path), "--places", "2600", "--queries", "20",
                        "--components", "20", "--efs", "16", "64", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["places"] == 2600 and result["graph_dim"] == 512
    graphs = result["graphs"]
    assert list(graphs) == ["route order", "background rebuilds", "refined",
                            "refined + rebuilds", "batches of 8", "batches of 8, refined",
                            "rebuilt"]
    for label, graph in graphs.items():
        assert [row["ef"] for row in graph["efs"]] == [16, 64]
        for row in graph["efs"]:
            assert 0.0 <= row["recall_at_1"] <= 1.0 and row["p50_ms"] > 0
        assert label == "rebuilt" or graph["add_ms"]["p50"] > 0
    assert graphs["rebuilt"]["efs"][-1]["recall_at_1"] >= 0.9
    assert graphs["refined"]["efs"][-1]["recall_at_1"] >= 0.9


def test_index_scaling_measures_the_default_index_and_the_full_graph(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--graph default --lift``: the index as IndexSettings() makes it (600-d descriptors
    lifted from 20 components, so a 512-d sketched graph), its ef sweep end to end (ef capped
    by the map's size); the plain full graph sweeps hnswlib's own search."""
    module = load("index_scaling_quick.py")
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # --lift imports insertion_order.py
    rng = np.random.default_rng(0)
    real = np.cumsum(rng.standard_normal((120, 600)).astype(np.float32), axis=0)
    path = tmp_path / "real.npy"
    np.save(path, real)
    common = ["--sizes", "600", "--queries", "20", "--exact-queries", "5"]
    out = tmp_path / "default.json"
    result = module.cli([*common, "--dims", "20", "--synthesise-from", str(path), "--lift",
                         "--graph", "default", "--efs", "32", "128", "--json", str(out)])
    assert json.loads(out.read_text())["graph"] == "default"
    (row,) = result["rows"]
    assert (row["dim"], row["places"], row["graph"]) == (600, 600, "default")
    assert [s["ef"] for s in row["ef_sweep"]] == [32, 64]  # 128 capped: 600 places use 64
    assert all(0.5 <= s["recall_at_1"] <= 1.0 for s in row["ef_sweep"])
    assert row["rerank"] == {} and row["default_ef"] == 64
    assert 0.5 <= row["query_e2e"]["recall_at_1"] <= 1.0 and row["query_e2e"]["p99_ms"] > 0
    assert row["disk_bytes_per_place"] > 2 * 600  # the float16 descriptors at least
    with pytest.raises(SystemExit):  # --lift without real descriptors to lift
        module.cli([*common, "--dims", "16", "--lift"])
    full = module.cli([*common, "--dims", "16", "--efs", "16", "32"])
    (row,) = full["rows"]
    assert row["graph"] == "full" and [s["ef"] for s in row["ef_sweep"]] == [16, 32]
    assert row["rerank"]["factor"] == 4


def test_preprocess_layouts_times_both_orders(tmp_path: Path) -> None:
    out = tmp_path / "layouts.json"
    assert load("preprocess_layouts.py").main(["--repeat", "3", "--frame-size", "48", "64",
                                               "--input-size", "24", "32",
                                               "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["frame"] for r in rows] == ["RGB", "BGR", "mono"]
    assert all(r["convert_then_resize_ms"] > 0 and r["resize_then_convert_ms"] > 0
               for r in rows)


def test_backend_latency_reports_not_run_without_a_gpu_backend(tmp_path: Path, tiny_onnx: Path,
                                                               cpu_only) -> None:
    report = tmp_path / "backend.json"
    assert load("backend_latency.py").main([str(tiny_onnx), "--json", str(report)]) == 0
    assert json.loads(report.read_text())["status"] == (
        f"not run: {tiny_onnx.name} runs only on the CPU here")


def test_backend_latency_measures_and_prints_any_backend(tiny_onnx: Path, cpu_only, capsys,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The measuring and printing parts, with the CPU backend standing in for a GPU one."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    module = load("backend_latency.py")
    from vpr_edge import Localizer
    from vpr_edge.backends import open_backend

    with open_backend(tiny_onnx, backend="onnxruntime-cpu") as a, \
            open_backend(tiny_onnx, backend="onnxruntime-cpu") as b:
        rows = module.latency_rows(a, [1, 3], 1, 3)
        rows.append(module.cpu_row(b, 1, 1, 3))
        results = {"backend": a.info(), "inference": rows,
                   "agreement": module.agreement(a, b, 4),
                   "speedup_over_cpu_batch1": module.speedup_at_batch1(rows)}
    assert [(r["runtime"], r["batch"]) for r in rows] == [
        ("onnxruntime-cpu", 1), ("onnxruntime-cpu", 3), ("onnxruntime-cpu, 1 thread(s)", 1)]
    assert results["agreement"]["cosine_min"] > 0.9999
    assert results["speedup_over_cpu_batch1"] == round(rows[2]["median_ms"] / rows[0]["median_ms"],
                                                       2)
    assert module.speedup_at_batch1(rows[:2]) is None  # no CPU row
    with Localizer(tiny_onnx, backend="onnxruntime-cpu") as loc:
        breakdown = module.query_breakdown(loc, 300, 1, 3, 5)
    module.print_inference(results)
    module.print_breakdown("Localizer.query on onnxruntime-cpu, 300 places", breakdown)
    out = capsys.readouterr().out
    assert "vs the CPU, cosine over 4 frames" in out and "overhead vs inference" in out
    assert "Localizer.query on onnxruntime-cpu, 300 places" in out
