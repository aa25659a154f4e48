"""The benchmark scripts: help text, the GPU script's not-run report, and the PR helpers."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
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
                         "--graph", "default", "--efs", "32", "64", "128", "--json", str(out)])
    assert json.loads(out.read_text())["graph"] == "default"
    (row,) = result["rows"]
    assert (row["dim"], row["places"], row["graph"]) == (600, 600, "default")
    # 128 is capped to the 64 that 600 places use, already measured: not measured again
    assert [s["ef"] for s in row["ef_sweep"]] == [32, 64]
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


def test_index_scaling_on_a_small_real_file_caps_sizes_for_the_append(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """``--descriptors`` with fewer rows than ``--sizes`` (plus their 1% append): the sizes are
    capped so that the save after a 1% append has rows to add, and the run says so."""
    module = load("index_scaling_quick.py")
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # it imports real_route.py
    real = np.random.default_rng(0).standard_normal((600, 64)).astype(np.float32)
    path = tmp_path / "real.npy"
    np.save(path, real)
    common = ["--descriptors", str(path), "--queries", "20", "--exact-queries", "5",
              "--efs", "16"]
    (row,) = module.cli(common)["rows"]  # the default --sizes, 10000 100000
    assert (row["dim"], row["places"], row["append_places"]) == (64, 595, 5)  # 595 + 5 = 600
    assert row["save_append_s"] > 0 and row["open_s"] > 0
    assert row["open_kept_graph_s"] > 0 and row["open_full_graph_s"] > 0
    assert "measuring [595] places instead of [10000, 100000]" in capsys.readouterr().out
    rows = module.cli([*common, "--sizes", "300", "600"])["rows"]
    assert [(r["places"], r["append_places"]) for r in rows] == [(300, 3)]


@pytest.mark.parametrize("option", ["--descriptors", "--synthesise-from"])
def test_index_scaling_without_its_descriptors_file_skips(
        option: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """A benchmark without its data says so and exits 0 (reproduce.sh goes on)."""
    module = load("index_scaling_quick.py")
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    missing = tmp_path / "missing.npy"
    plot, out = tmp_path / "scaling.png", tmp_path / "scaling.json"
    result = module.cli([option, str(missing), "--plot", str(plot), "--json", str(out)])
    assert result["skipped"] == f"{missing} not found"
    assert capsys.readouterr().out.startswith(f"skipped: {missing} not found")
    assert not plot.exists() and not out.exists()


def write_images(folder: Path, count: int, seed: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        pixels = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"Image{i:03d}.jpg")


@pytest.fixture
def default_model_in_temp(tmp_path: Path, tiny_onnx: Path, monkeypatch: pytest.MonkeyPatch):
    """The default init model replaced by the tiny one, copied into the folder it is given;
    temporary folders made under ``tmp_path / "tmp"`` (returned: empty after a clean run)."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    made = []

    def tiny_default_model(data: Path, work: Path) -> Path:
        assert work.parent == temp
        made.append(Path(shutil.copy(tiny_onnx, work / "loops.onnx")))
        return made[-1]

    load("loop_closure.py")  # the neighbour module the scripts import
    monkeypatch.setattr(sys.modules["loop_closure"], "default_model", tiny_default_model)
    return temp, made


def test_loop_benchmark_removes_its_default_model_folder(tmp_path: Path,
                                                        default_model_in_temp) -> None:
    pytest.importorskip("cv2")
    temp, made = default_model_in_temp
    data = tmp_path / "data"
    for seed, walk in enumerate(("day_left", "day_right")):
        write_images(data / "gardens_point" / walk, 30, seed)
    out = tmp_path / "loops.json"
    module = sys.modules["loop_closure"]
    assert module.main(["--data", str(data), "--thresholds", "2", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["frames"] == 60
    assert len(made) == 1 and list(temp.iterdir()) == []


def test_montage_removes_its_default_model_folder(tmp_path: Path, default_model_in_temp) -> None:
    temp, made = default_model_in_temp
    corridor = tmp_path / "data" / "corridor"
    write_images(corridor / "ref", 6, 0)
    write_images(corridor / "query", 6, 1)
    truth = np.empty((6, 2), dtype=object)
    for q in range(6):
        truth[q] = [q, [r for r in range(q - 2, q + 3) if 0 <= r < 6]]
    np.save(corridor / "ground_truth.npy", truth, allow_pickle=True)
    out = tmp_path / "montage.json"
    module = load("retrieval_montage.py")
    assert module.main(["--data", str(tmp_path / "data"), "--rows", "3",
                        "--json", str(out)]) == 0
    assert len(json.loads(out.read_text())["rows"]) == 3
    assert len(made) == 1 and list(temp.iterdir()) == []


def test_runtime_memory_times_the_map_open_alone(monkeypatch: pytest.MonkeyPatch,
                                                 capsys) -> None:
    """``open_s`` is ``Localizer(model, map)``: not the model opened alone before it."""
    import vpr_edge

    class SlowModelOpen:
        def __init__(self, model, map_dir=None, backend="auto"):
            if map_dir is None:
                time.sleep(0.3)  # the model opened alone
            self.index = [0, 1, 2]

        def query(self, frame, **kwargs):
            return []

        def close(self):
            time.sleep(0.3)

    monkeypatch.setattr(vpr_edge, "Localizer", SlowModelOpen)
    monkeypatch.setattr(sys, "argv", ["probe", "model.onnx", "map", "1"])
    exec(load("runtime_memory.py").PROBE, {})
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["open_s"] < 0.3  # not the model open (0.3 s) nor the close between
    assert result["model_open_s"] >= 0.3
    assert result["places"] == 3


def test_plugin_kernel_bytes_and_speedups() -> None:
    """The bytes the FP16 kernel moves count each of the layer's parameters once, and each
    speed-up is named after the two timings it divides."""
    pytest.importorskip("torch")
    module = load("plugin_kernel.py")
    from vpr_edge.training.netvlad import NetVLAD

    layer = NetVLAD(64, 112)
    parameters = sum(p.numel() for p in layer.parameters())  # weight, bias, centroids
    features, output = 8 * 112 * 15 * 20, 8 * 64 * 112
    assert module.fp16_bytes_moved(8, 15, 20) == 2 * (features + parameters + output)
    assert parameters == 2 * 64 * 112 + 64
    row = {"eager_fp32_ms": 0.6, "eager_fp16_ms": 0.5, "kernel_fp32_ms": 0.4,
           "kernel_fp16_ms": 0.25}
    assert module.speedups(row) == {"kernel_fp16_speedup_vs_eager_fp16": 2.0,
                                    "kernel_fp16_speedup_vs_eager_fp32": 2.4,
                                    "kernel_fp32_speedup_vs_eager_fp32": 1.5}


def test_latency_times_the_bare_graph_walk_after_an_inference(tiny_onnx: Path) -> None:
    """``latency.py`` reports hnswlib's own walk after an inference (the floor of a graph
    search): a positive time for a graph, none for a map searched exactly."""
    module = load("latency.py")
    from vpr_edge import Localizer
    from vpr_edge.index import IndexSettings

    rng = np.random.default_rng(0)
    camera = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    for mode in ("hnsw", "exact"):
        with Localizer(tiny_onnx, backend="onnxruntime-cpu",
                       index_settings=IndexSettings(mode=mode)) as loc:
            rows = rng.standard_normal((200, loc.metadata.dim)).astype(np.float32)
            loc.index.add(rows / np.linalg.norm(rows, axis=1, keepdims=True))
            batch1 = loc._prepare(camera, "RGB")[0]
            walk = module.graph_walk_after_inference(loc, batch1, loc.describe(camera), 3)
            after = module.stages_after_inference(loc, camera, batch1, 3)
        assert (walk > 0) == (mode == "hnsw"), (mode, walk)
        assert (after["graph walk alone ms"] > 0) == (mode == "hnsw")


def test_latency_compares_the_exact_products_and_restores_the_index(tiny_onnx: Path) -> None:
    """``latency.py``'s exact-map rows time both products, each giving a query, and leave
    ``float32_scores.scores`` as it was."""
    module = load("latency.py")
    from vpr_edge import Localizer
    from vpr_edge.index import float32_scores

    before = float32_scores.scores
    camera = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    with Localizer(tiny_onnx, backend="onnxruntime-cpu") as loc:
        rows = module.exact_map_products(loc, camera, 50, 8)
    assert float32_scores.scores is before
    assert set(rows) == {"numpy (OpenBLAS, all cores)", "onnxruntime (one thread)"}
    for r in rows.values():
        assert r["query ms"] >= r["inference ms"] + r["search ms"] > 0


def test_loop_closure_times_spinning_after_run_with_the_same_loops(tiny_onnx: Path) -> None:
    """``loop_closure.py``'s spinning comparison times both sessions over the same frames,
    finds the same loops, and leaves the backend's session options as they were."""
    module = load("loop_closure.py")
    from vpr_edge.backends import onnxruntime_backend as ortb

    before = ortb.OnnxRuntimeBackend._session_options
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(6)] * 2
    got = module.spinning_after_run(tiny_onnx, frames, verify=False, block=3)
    assert ortb.OnnxRuntimeBackend._session_options is before
    assert set(got["process ms"]) == {"spinning after run (before)", "stopped after run (now)"}
    assert all(ms > 0 for ms in got["process ms"].values())
    assert got["same loops"] is True
