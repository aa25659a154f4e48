"""``vpr-edge backends``: what can run here and why not (``vpr_edge.backends.environment``)."""

from __future__ import annotations

import json
from pathlib import Path

import onnxruntime
import pytest

from vpr_edge.backends import environment
from vpr_edge.backends.select import BACKEND_ORDER, BackendStatus
from vpr_edge.cli import main


def test_a_cpu_machine_runs_onnx_on_the_cpu_and_says_why_not_the_gpu(
        tiny_onnx: Path, tmp_path: Path, cpu_only: None, capsys) -> None:
    out_json = tmp_path / "backends.json"
    assert main(["backends", str(tiny_onnx), "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out_json.read_text())
    rows = {row["backend"]: row for row in report["backends"]}
    assert list(rows) == list(BACKEND_ORDER)
    assert rows["onnxruntime-cpu"]["available"] and rows["onnxruntime-cpu"]["auto"]
    assert report["auto_order"] == ["onnxruntime-cpu"]
    assert "auto picks: onnxruntime-cpu" in printed
    for name in ("onnxruntime-cuda", "onnxruntime-tensorrt"):  # (cpu_only: CPU provider only)
        assert not rows[name]["available"] and "vpr-edge[gpu]" in rows[name]["why not"]
    assert "runs a TensorRT engine file" in rows["tensorrt"]["why not"]  # an .onnx model
    assert report["libraries"]["onnxruntime"].startswith(onnxruntime.__version__)
    assert report["onnxruntime_providers"] == ["CPUExecutionProvider"]
    assert report["resizer"] in ("opencv", "pillow") and report["python"]


def test_an_engine_file_limits_the_list_to_tensorrt(tmp_path: Path, capsys) -> None:
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"only its name is read")
    assert main(["backends", str(engine)]) == 0
    printed = capsys.readouterr().out
    for name in ("onnxruntime-cpu", "onnxruntime-cuda", "onnxruntime-tensorrt"):
        row = next(line for line in printed.splitlines() if line.split()[:1] == [name])
        assert row.split()[1] == "no" and "runs an .onnx model, not model.engine" in row
    report = environment.environment_report(engine)
    assert [row["backend"] for row in report["backends"] if row["available"]] in (
        [], ["tensorrt"])  # (tensorrt on a machine with TensorRT and a GPU)


def test_a_backend_auto_passes_over_is_shown_as_named_only(tiny_onnx: Path,
                                                           monkeypatch, capsys) -> None:
    """onnxruntime-gpu without TensorRT's libraries: its TensorRT provider is listed but
    auto skips it (it printed a red error block at every start)."""
    monkeypatch.setattr(environment, "backend_report", lambda model: [
        BackendStatus(name, True)
        for name in ("onnxruntime-tensorrt", "onnxruntime-cuda", "onnxruntime-cpu")])
    monkeypatch.setattr(environment, "auto_skip_reason",
                        lambda name: "no libnvinfer" if name == "onnxruntime-tensorrt" else None)
    report = environment.environment_report(tiny_onnx)
    assert report["auto_order"] == ["onnxruntime-cuda", "onnxruntime-cpu"]
    skipped = report["backends"][0]
    assert skipped["available"] and not skipped["auto"]
    assert skipped["why not"] == "auto skips it: no libnvinfer"
    assert main(["backends", str(tiny_onnx)]) == 0
    printed = capsys.readouterr().out
    assert "named only" in printed
    assert "auto picks: onnxruntime-cuda (then onnxruntime-cpu if it fails to open)" in printed


def test_a_library_without_pip_metadata_is_found_by_its_module(monkeypatch) -> None:
    """JetPack's TensorRT (apt's python3-libnvinfer) has no pip metadata."""
    import sys
    import types

    monkeypatch.setitem(sys.modules, "fake_tensorrt_module",
                        types.SimpleNamespace(__version__="10.3.0"))
    assert environment.library_version(("no-such-distribution",), "fake_tensorrt_module") \
        == "10.3.0 (no pip metadata)"
    assert environment.library_version(("no-such-distribution",), "no_such_module") is None
    assert environment.library_version(("numpy",), None).endswith("(numpy)")


@pytest.mark.parametrize("name", ["missing.onnx", "model.pt"])
def test_a_missing_or_foreign_model_is_an_error(tmp_path: Path, name: str, capsys) -> None:
    path = tmp_path / name
    if name.endswith(".pt"):
        path.write_bytes(b"x")
    assert main(["backends", str(path)]) == 2
    err = capsys.readouterr().err
    assert ("no such model file" in err) if name == "missing.onnx" else ("vpr-export" in err)
