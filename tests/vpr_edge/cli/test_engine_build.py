"""`vpr-edge engine build`: an engine from an exported ONNX, where it will run, without torch."""

from __future__ import annotations

import json
import os
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
    assert main(["engine", "build", str(tiny_onnx), "--compute-capability", "8.9"]) == 0  # again


def test_what_is_at_the_output_is_replaced_only_when_it_is_this_model_s(
        tiny_onnx: Path, tiny, tmp_path: Path, make_model, monkeypatch, capsys) -> None:
    """An FP32 build silently replaced the FP16 engine of the same name. Replaced: a
    rebuild of the same model, or a damaged engine (which its error says to rebuild)."""
    from vpr_edge import tensorrt_build
    from vpr_edge.engine_file import MAGIC, engine_header_for, write_engine_file
    from vpr_edge.errors import InvalidInputError

    built = []

    def stub(onnx, output, *args, **kwargs):  # no TensorRT needed: the check comes first
        built.append(output)
        raise InvalidInputError("stub: no engine is built here")

    monkeypatch.setattr(tensorrt_build, "write_engine", stub)
    engine = tmp_path / "tiny.engine"
    fp16 = replace(tiny.metadata(), precision="fp16")
    write_engine_file(engine, engine_header_for(fp16, b"engine", tensorrt_module="tensorrt",
                                                tensorrt_version="10.3",
                                                compute_capability="8.7"), b"engine")
    before = engine.read_bytes()
    for existing in (before, b"not an engine at all"):
        engine.write_bytes(existing)
        assert main(["engine", "build", str(tiny_onnx)]) == 2  # fp32 over fp16, over a stranger
        assert engine.read_bytes() == existing and "give --output" in capsys.readouterr().err
    assert built == []
    engine.write_bytes(MAGIC + b"\x00\x01 cut short")  # damaged: its message says rebuild it
    assert main(["engine", "build", str(tiny_onnx)]) == 2 and built == [engine]


@pytest.mark.parametrize("output, words", [("-", "not to standard output"),
                                           ("pipe", "not a regular file")])
def test_an_engine_is_never_written_to_stdout_or_a_device(tiny_onnx: Path, tmp_path: Path,
                                                          monkeypatch, capsys, output: str,
                                                          words: str) -> None:
    """`-o -` would have built an engine into a file named `-`, and `-o /dev/null` (as root)
    replaced the device by the engine: refused before the build. (A pipe stands in for the
    device: a regression would replace it, not /dev/null.)"""
    monkeypatch.chdir(tmp_path)
    if output == "pipe":
        os.mkfifo(output)
    assert main(["engine", "build", str(tiny_onnx), "-o", output]) == 2
    assert f"--output {output}: " in capsys.readouterr().err and not (tmp_path / "-").exists()
    assert output != "pipe" or (tmp_path / "pipe").is_fifo()


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


def test_missing_output_folders_are_made(tiny_onnx: Path, tmp_path: Path) -> None:
    """`-o new/sub/x.engine` built the engine, then died with a FileNotFoundError traceback
    for the temporary file beside it (--json makes its folders)."""
    pytest.importorskip("tensorrt_rtx")
    target = tmp_path / "new" / "sub" / "x.engine"
    assert main(["engine", "build", str(tiny_onnx), "-o", str(target),
                 "--compute-capability", "8.9"]) == 0
    assert read_engine_header(target).compute_capability == "8.9"


def test_an_output_through_a_file_is_refused_before_the_build(tiny_onnx: Path, tmp_path: Path,
                                                               monkeypatch, capsys) -> None:
    from vpr_edge import tensorrt_build

    monkeypatch.setattr(tensorrt_build, "find_builder", lambda preferred=None: None)
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    assert main(["engine", "build", str(tiny_onnx), "-o", str(blocker / "x.engine")]) == 2
    assert f"{blocker} is a file, not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("forced, here, words", [
    ("tensorrt", "tensorrt_rtx", ["full TensorRT (tensorrt) is not importable here",
                                  "vpr-edge[tensorrt]", "this machine has tensorrt_rtx 1.7.1",
                                  "--tensorrt-module tensorrt_rtx"]),
    ("tensorrt_rtx", "tensorrt", ["TensorRT-RTX (tensorrt_rtx) is not importable here",
                                  "pip install tensorrt-rtx-cu13",
                                  "this machine has tensorrt 1.7.1"]),
    ("tensorrt", None, ["full TensorRT (tensorrt) is not importable",
                        "no other TensorRT module is installed either"]),
])
def test_a_forced_module_that_is_missing_is_named_with_what_is_here(
        tiny_onnx: Path, monkeypatch, capsys, forced: str, here: str | None,
        words: list[str]) -> None:
    """`--tensorrt-module tensorrt` without full TensorRT said only
    "error: tensorrt_rtx 1.7.1.116" (what was installed, as if that were the problem)."""
    from types import SimpleNamespace

    for name in ("tensorrt", "tensorrt_rtx"):  # (None in sys.modules: the import fails)
        module = SimpleNamespace(__version__="1.7.1") if name == here else None
        monkeypatch.setitem(sys.modules, name, module)
    argv = ["engine", "build", str(tiny_onnx), "--tensorrt-module", forced]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert all(word in err for word in words), err
    assert not tiny_onnx.with_name("tiny.engine").exists()


def _modules_here(monkeypatch, **versions: str | None) -> None:
    """Stand-in TensorRT modules (None: not importable)."""
    from types import SimpleNamespace

    for name in ("tensorrt", "tensorrt_rtx"):
        version = versions.get(name)
        monkeypatch.setitem(sys.modules, name,
                            None if version is None else SimpleNamespace(__version__=version))


def test_compute_capability_with_full_tensorrt_as_the_default_is_refused(
        tiny_onnx: Path, monkeypatch, capsys) -> None:
    """With both modules installed, full TensorRT builds by default, and it ignored
    --compute-capability: asked for 8.9, the engine was built for the GPU here, exit 0."""
    _modules_here(monkeypatch, tensorrt="10.3.0", tensorrt_rtx="1.7.1")
    assert main(["engine", "build", str(tiny_onnx), "--compute-capability", "8.9"]) == 2
    err = capsys.readouterr().err
    assert "--compute-capability is for TensorRT-RTX: full TensorRT (the builder chosen here" in err
    assert "--tensorrt-module tensorrt_rtx" in err
    assert not tiny_onnx.with_name("tiny.engine").exists()


def test_full_tensorrt_without_a_usable_gpu_is_not_a_builder(tiny_onnx: Path, monkeypatch,
                                                               capsys) -> None:
    """Full TensorRT builds for the GPU it runs on. Without one, its Builder raised a bare
    TypeError ("factory function returned nullptr"): a traceback from `engine build`, and
    `vpr-export`, which builds an engine whenever a builder imports, lost its ONNX files."""
    from vpr_edge import tensorrt_build
    from vpr_edge.backends import cuda_memory
    from vpr_edge.errors import BackendUnavailableError, CudaError

    def no_driver():
        raise CudaError("cudaGetDeviceCount failed: cudaErrorInsufficientDriver", 35,
                        "cudaErrorInsufficientDriver")

    _modules_here(monkeypatch, tensorrt="10.3.0")
    monkeypatch.setattr(cuda_memory, "device_count", no_driver)
    ok, reason = tensorrt_build.builder_available()
    assert not ok and "tensorrt 10.3.0 is installed, but it builds for the GPU it runs on" in reason
    assert "cudaErrorInsufficientDriver" in reason
    assert main(["engine", "build", str(tiny_onnx)]) == 2
    assert "builds for the GPU it runs on" in capsys.readouterr().err
    # a GPU that CUDA lists, but TensorRT cannot start on: its TypeError is named
    monkeypatch.setattr(cuda_memory, "device_count", lambda: 1)

    class Builder:
        def __init__(self, logger):
            raise TypeError("pybind11::init(): factory function returned nullptr")

    sys.modules["tensorrt"].Builder = Builder
    monkeypatch.setattr(tensorrt_build, "process_logger", lambda trt: _Recorder())
    with pytest.raises(BackendUnavailableError, match="cannot create a builder here.*nullptr"
                       ".*CUDA initialization failure.*--gpus"):
        tensorrt_build.build_engine(tiny_onnx, tensorrt_build.EngineBuildConfig())


class _Recorder:
    def mark(self) -> int:
        return 0

    def errors_since(self, mark: int, last: int | None = None) -> list[str]:
        return ["CUDA initialization failure with error 35"]
