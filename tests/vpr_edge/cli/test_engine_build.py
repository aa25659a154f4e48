"""`vpr-edge engine build`: an engine from an exported ONNX, where it will run, without torch."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from vpr_edge.cli import main
from vpr_edge.cli.engine_build import engine_path_for
from vpr_edge.engine_file import read_engine_header
from vpr_edge.metadata import PluginInfo


def test_engine_names_follow_vpr_export() -> None:
    assert engine_path_for(Path("runs/model.fp16.onnx")) == Path("runs/model.engine")
    assert engine_path_for(Path("m.onnx")) == Path("m.engine")
    assert engine_path_for(Path("a.b.ONNX")) == Path("a.b.engine")


def test_builds_a_headed_engine_without_torch(tiny_onnx: Path, tiny, tmp_path: Path,
                                              make_model, monkeypatch) -> None:
    """The only way to an engine the runtime accepts was vpr-export, which needs the
    checkpoint, torch and timm: a Jetson could not build its own from the exported ONNX."""
    pytest.importorskip("tensorrt_rtx")
    monkeypatch.setitem(sys.modules, "torch", None)  # the command must not need it
    out = tmp_path / "build.json"
    assert main(["engine", "build", str(tiny_onnx), "--compute-capability", "8.9",
                 "--batch", "1", "2", "4", "--json", str(out)]) == 0
    engine = tmp_path / "tiny.engine"
    header = read_engine_header(engine)
    assert header.model.fingerprint == tiny.metadata().fingerprint
    assert (header.tensorrt_module, header.compute_capability) == ("tensorrt_rtx", "8.9")
    assert header.builder["onnx"] == "tiny.onnx"
    assert header.builder["profile"] == {"min": 1, "opt": 2, "max": 4}
    summary = json.loads(out.read_text())
    assert summary["engine"] == str(engine) and summary["bytes"] == engine.stat().st_size
    # a rebuild of the same model replaces it; another model's engine there is kept (an
    # FP32 build silently replaced the FP16 engine of the same name)
    assert main(["engine", "build", str(tiny_onnx), "--compute-capability", "8.9"]) == 0
    other = make_model("other.fp16.onnx", meta=replace(tiny.metadata(), precision="fp16"))
    before = engine.read_bytes()
    assert main(["engine", "build", str(other), "-o", str(engine)]) == 2
    assert engine.read_bytes() == before


@pytest.mark.parametrize("argv, words", [
    (["--compute-capability", "8.7"], "Jetson GPU"),
    (["--batch", "4", "2", "8"], "min <= opt <= max"),
    (["--tensorrt-module", "tensorrt", "--compute-capability", "8.9"], "is for TensorRT-RTX"),
    (["--tensorrt-module", "tensorrt_rtx", "--version-compatible"], "needs full TensorRT"),
])
def test_impossible_requests_are_refused_before_the_build(tiny_onnx: Path, argv: list[str],
                                                          words: str, capsys) -> None:
    assert main(["engine", "build", str(tiny_onnx), *argv]) == 2
    assert words in capsys.readouterr().err
    assert not tiny_onnx.with_name("tiny.engine").exists()


def test_files_it_cannot_build_from_are_named(make_model, tiny, tmp_path: Path,
                                              capsys) -> None:
    plugin = make_model("p.plugin.fp16.onnx",
                        meta=replace(tiny.metadata(), plugin=PluginInfo("NetVLAD", "1")))
    assert main(["engine", "build", str(plugin)]) == 2
    assert "vpr-export CHECKPOINT --plugin --engine" in capsys.readouterr().err
    stranger = tmp_path / "other.onnx"
    stranger.write_bytes(b"not a model")
    assert main(["engine", "build", str(stranger)]) == 2
    assert "other.onnx" in capsys.readouterr().err
    assert main(["engine", "build", str(tmp_path / "missing.onnx")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "folder.engine").mkdir()
    assert main(["engine", "build", str(plugin), "-o", str(tmp_path / "folder.engine")]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_without_tensorrt_it_says_what_to_install(tiny_onnx: Path, monkeypatch, capsys) -> None:
    from vpr_edge import tensorrt_build

    monkeypatch.setattr(tensorrt_build, "find_builder", lambda preferred=None: None)
    assert main(["engine", "build", str(tiny_onnx)]) == 2
    assert "vpr-edge[tensorrt]" in capsys.readouterr().err
