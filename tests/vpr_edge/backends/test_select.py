"""Backend selection: the explicit order, logging the choice, and no silent fallback."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest

from vpr_edge.backends import (
    BACKEND_ORDER,
    available_backends,
    backend_report,
    open_backend,
)
from vpr_edge.errors import (
    BackendUnavailableError,
    InvalidInputError,
    MissingDependencyError,
    ModelFormatError,
)


@pytest.fixture
def pretend_gpu_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    """ONNX Runtime *claims* TensorRT and CUDA EPs, but this machine cannot load them: real
    sessions fall back to the CPU, as they do on a robot with a broken CUDA install."""
    import onnxruntime as ort

    monkeypatch.setattr(
        ort,
        "get_available_providers",
        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    )


@pytest.fixture
def no_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("tensorrt", "tensorrt_lean", "tensorrt_rtx"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError


def test_backend_order_is_explicit() -> None:
    assert BACKEND_ORDER == (
        "tensorrt", "onnxruntime-tensorrt", "onnxruntime-cuda", "onnxruntime-cpu"
    )


def test_report_lists_every_backend_with_reasons(cpu_only, no_tensorrt, tiny_onnx) -> None:
    report = {s.name: s for s in backend_report()}
    assert list(report) == list(BACKEND_ORDER)
    assert report["onnxruntime-cpu"].available and report["onnxruntime-cpu"].reason == ""
    assert "vpr-edge[tensorrt]" in report["tensorrt"].reason
    assert "onnxruntime-gpu not installed" in report["onnxruntime-cuda"].reason
    assert "vpr-edge[gpu]" in report["onnxruntime-cuda"].reason
    assert "TensorRT execution provider" in report["onnxruntime-tensorrt"].reason
    assert available_backends() == ["onnxruntime-cpu"]
    assert available_backends(tiny_onnx) == ["onnxruntime-cpu"]


def test_file_type_limits_the_backends(cpu_only, no_tensorrt, tmp_path) -> None:
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    report = {s.name: s for s in backend_report(engine)}
    assert "runs an .onnx model, not m.engine" in report["onnxruntime-cpu"].reason
    assert available_backends(engine) == []
    with pytest.raises(ModelFormatError, match="unknown model file type '.pt'"):
        backend_report(tmp_path / "m.pt")


def test_auto_picks_cpu_and_logs_why_it_skipped_the_others(
    tiny_onnx, pretend_gpu_providers, caplog, tiny
) -> None:
    with caplog.at_level(logging.INFO, logger="vpr_edge"):
        backend = open_backend(tiny_onnx)
    with backend:
        assert backend.name == "onnxruntime-cpu"
        assert backend.providers == ("CPUExecutionProvider",)
        frames = tiny.frames(2)
        np.testing.assert_allclose(
            backend.run(frames), tiny.reference(frames, tiny.metadata()), rtol=1e-4, atol=1e-5
        )
    records = [r for r in caplog.records if r.name.startswith("vpr_edge")]
    text = "\n".join(r.getMessage() for r in records)
    assert "chose onnxruntime-cpu" in text
    assert "skipped onnxruntime-tensorrt (" in text
    assert "onnxruntime-cuda (" in text and "did not load CUDAExecutionProvider" in text


def test_named_backend_that_falls_back_raises_listing_what_works(
    tiny_onnx, pretend_gpu_providers
) -> None:
    with pytest.raises(BackendUnavailableError) as info:
        open_backend(tiny_onnx, backend="onnxruntime-cuda")
    message = str(info.value)
    assert "'onnxruntime-cuda' cannot run tiny.onnx" in message
    assert "would run on CPUExecutionProvider" in message
    assert "Available for this model (by a quick check" in message
    assert "onnxruntime-cpu" in message.split("Available for this model")[1]


def test_named_alias_without_gpu_package_says_what_to_install(tiny_onnx, cpu_only) -> None:
    with pytest.raises(
        BackendUnavailableError,
        match=r"onnxruntime-gpu not installed.*vpr-edge\[gpu\].*Available for this model .*: "
        r"onnxruntime-cpu",
    ):
        open_backend(tiny_onnx, backend="cuda")


def test_named_cpu_backend_opens(tiny_onnx, cpu_only) -> None:
    with open_backend(tiny_onnx, backend="cpu", intra_op_num_threads=1) as b:
        assert b.name == "onnxruntime-cpu"
        assert b.info()["intra_op_num_threads"] == 1


def test_tensorrt_cannot_run_an_onnx_file(tiny_onnx, cpu_only) -> None:
    with pytest.raises(BackendUnavailableError, match="runs a TensorRT engine file"):
        open_backend(tiny_onnx, backend="tensorrt")


def test_a_backend_for_another_file_type_is_named_before_its_options(tiny_onnx, cpu_only,
                                                                     tmp_path) -> None:
    """`--backend trt --threads 2` on an .onnx said "unknown option(s) intra_op_num_threads";
    without --threads, the real problem: TensorRT runs .engine files only."""
    with pytest.raises(BackendUnavailableError, match="'tensorrt' cannot run tiny.onnx here: "
                                                      "runs a TensorRT engine file"):
        open_backend(tiny_onnx, backend="trt", intra_op_num_threads=2)
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    with pytest.raises(BackendUnavailableError, match="'onnxruntime-cpu' cannot run m.engine "
                                                      "here: runs an .onnx model"):
        open_backend(engine, backend="cpu", max_batch=8)


def test_engine_without_tensorrt_is_unavailable_with_the_extra(
    cpu_only, no_tensorrt, tmp_path
) -> None:
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not really an engine")
    with pytest.raises(BackendUnavailableError, match=r"vpr-edge\[tensorrt\]"):
        open_backend(engine)
    pattern = r"'tensorrt' cannot run m.engine.*\[tensorrt\]"
    with pytest.raises(BackendUnavailableError, match=pattern):
        open_backend(engine, backend="tensorrt")


def test_unknown_names_and_options_are_refused(tiny_onnx, cpu_only) -> None:
    with pytest.raises(InvalidInputError, match="unknown backend 'gpu'.*onnxruntime-cpu"):
        open_backend(tiny_onnx, backend="gpu")
    with pytest.raises(InvalidInputError, match="unknown option.*threads.*intra_op_num_threads"):
        open_backend(tiny_onnx, threads=2)


def test_onnx_only_option_for_an_engine_is_refused(tmp_path) -> None:
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    with pytest.raises(InvalidInputError, match="intra_op_num_threads.*vpr-edge --threads.*"
                                                "runs on the GPU"):
        open_backend(engine, intra_op_num_threads=2)


def test_damaged_file_is_not_hidden_by_auto(tiny_onnx, pretend_gpu_providers, tmp_path) -> None:
    """A broken file is a ModelFormatError under auto, not 'no backend available'."""
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(tiny_onnx.read_bytes()[:100])
    with pytest.raises(ModelFormatError, match="cut.onnx"):
        open_backend(cut)


def test_missing_file_is_refused(tmp_path) -> None:
    with pytest.raises(ModelFormatError, match="not found"):
        open_backend(tmp_path / "absent.onnx")


def test_missing_onnxruntime_is_reported(tiny_onnx, monkeypatch, no_tensorrt) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    report = {s.name: s for s in backend_report(tiny_onnx)}
    assert "vpr-edge[cpu]" in report["onnxruntime-cpu"].reason
    with pytest.raises(BackendUnavailableError, match=r"vpr-edge\[cpu\]"):
        open_backend(tiny_onnx)
    assert issubclass(MissingDependencyError, ImportError)


def test_engine_nothing_can_run_names_a_fix_that_runs_an_engine(no_tensorrt, tmp_path) -> None:
    """ONNX Runtime never runs an .engine file: the fix is TensorRT on a GPU, or the .onnx."""
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    with pytest.raises(BackendUnavailableError) as info:
        open_backend(engine)
    text = str(info.value)
    assert "vpr-edge[tensorrt]" in text and "run the .onnx model" in text
    assert not text.endswith("Install vpr-edge[cpu] for ONNX Runtime on the CPU")


def test_a_model_folder_or_unreadable_model_is_named_as_such(
        tiny_onnx, cpu_only, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder was "model file not found"; a file this user may not read was "not a
    loadable ONNX model ... truncated, damaged or not ONNX: export it again"."""
    import os

    for name in ("model.onnx", "export"):  # (a folder without a suffix was "unknown model
        folder = tmp_path / name            # file type '(none)'")
        folder.mkdir()
        with pytest.raises(ModelFormatError, match="is a folder, not a model file"):
            open_backend(folder)
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"torch")
    with pytest.raises(ModelFormatError, match="export it first with `vpr-export MODEL.pt`"):
        open_backend(checkpoint)
    real_access = os.access
    monkeypatch.setattr(os, "access",
                        lambda p, m, **kw: False if str(p) == str(tiny_onnx)
                        else real_access(p, m))
    with pytest.raises(ModelFormatError, match="no permission to read the model file"):
        open_backend(tiny_onnx)


def test_without_onnxruntime_gpu_targets_name_the_gpu_extra(monkeypatch) -> None:
    """They said "install vpr-edge's 'cpu' extra", though [cpu] and [gpu] must not be
    installed together."""
    from vpr_edge.backends import onnxruntime_backend

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    for target, extra in (("cpu", "cpu"), ("cuda", "gpu"), ("tensorrt", "gpu")):
        reason = onnxruntime_backend.provider_missing_reason(target)
        assert f"'{extra}' extra" in reason or f"[{extra}]" in reason, reason


@pytest.mark.gpu
def test_auto_takes_a_gpu_backend_when_onnxruntime_has_cuda(tiny_onnx) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no CUDAExecutionProvider (pip install 'vpr-edge[gpu]')")
    with open_backend(tiny_onnx, backend="auto") as b:
        assert b.name in ("onnxruntime-tensorrt", "onnxruntime-cuda"), b.name


def test_auto_passes_over_the_tensorrt_provider_without_tensorrt_libraries(
    tiny_onnx, pretend_gpu_providers, caplog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On an H200 with onnxruntime-gpu and no TensorRT, `auto` made a TensorRT-provider session
    first: ONNX Runtime printed a red "EP Error" block on every start, then retried on CUDA."""
    from vpr_edge.backends import cuda_libraries, select

    opened: list[str] = []
    real_open = select._open
    monkeypatch.setattr(select, "_open", lambda name, *a: opened.append(name) or real_open(
        name, *a))
    monkeypatch.setattr(cuda_libraries, "tensorrt_library_found", lambda: False)
    with caplog.at_level(logging.INFO, logger="vpr_edge"), open_backend(tiny_onnx) as backend:
        assert backend.name == "onnxruntime-cpu"
    assert "onnxruntime-tensorrt" not in opened and "onnxruntime-cuda" in opened
    assert "skipped onnxruntime-tensorrt (TensorRT's library (libnvinfer) is not on the " \
           "loader's path" in caplog.text
    monkeypatch.setattr(cuda_libraries, "tensorrt_library_found", lambda: True)
    opened.clear()
    with open_backend(tiny_onnx):
        assert opened[0] == "onnxruntime-tensorrt"
    opened.clear()
    monkeypatch.setattr(cuda_libraries, "tensorrt_library_found", lambda: False)
    with pytest.raises(BackendUnavailableError):  # named: always tried
        open_backend(tiny_onnx, backend="onnxruntime-tensorrt")
    assert opened == ["onnxruntime-tensorrt"]


def test_tensorrt_library_is_looked_for_where_the_loader_looks(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vpr_edge.backends import cuda_libraries

    monkeypatch.setattr(cuda_libraries.ctypes.util, "find_library", lambda name: None)
    monkeypatch.setenv("LD_LIBRARY_PATH", f"/nonexistent-dir:{tmp_path}")
    assert not cuda_libraries.tensorrt_library_found()
    (tmp_path / "libnvinfer.so.10").write_bytes(b"")
    assert cuda_libraries.tensorrt_library_found()
    monkeypatch.delenv("LD_LIBRARY_PATH")
    assert not cuda_libraries.tensorrt_library_found()
    monkeypatch.setattr(cuda_libraries.ctypes.util, "find_library",
                        lambda name: "libnvinfer.so.10" if name == "nvinfer" else None)
    assert cuda_libraries.tensorrt_library_found()
