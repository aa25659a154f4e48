"""ONNX Runtime backend on the CPU with tiny contract-honouring models (fast, no GPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vpr_edge.backends.base import Backend
from vpr_edge.backends.onnxruntime_backend import (
    OnnxRuntimeBackend,
    OnnxRuntimeOptions,
    physical_core_count,
    provider_list,
)
from vpr_edge.errors import (
    BackendUnavailableError,
    InferenceError,
    InvalidInputError,
    ModelFormatError,
)


@pytest.fixture
def backend(tiny_onnx: Path, cpu_only):
    with OnnxRuntimeBackend(tiny_onnx, "cpu") as b:
        yield b


def test_outputs_match_numpy_reference(backend, tiny) -> None:
    frames = tiny.frames(3)
    out = backend.run(frames)
    assert out.dtype == np.float32 and out.shape == (3, tiny.DIM)
    np.testing.assert_allclose(out, tiny.reference(frames, tiny.metadata()), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)


def test_dynamic_batch_gives_the_same_rows(backend, tiny) -> None:
    frames = tiny.frames(5, seed=1)
    whole = backend.run(frames)
    singles = np.concatenate([backend.run(frames[i : i + 1]) for i in range(5)])
    np.testing.assert_allclose(whole, singles, rtol=1e-5, atol=1e-6)
    assert not np.allclose(whole[0], whole[1])  # different frames, different descriptors


def test_reports_what_really_runs(backend, tiny) -> None:
    assert backend.name == "onnxruntime-cpu"
    assert backend.device == "cpu"
    assert backend.providers == ("CPUExecutionProvider",)
    assert backend.max_batch == 32
    info = backend.info()
    assert info["backend"] == "onnxruntime-cpu" and info["dim"] == tiny.DIM
    assert info["intra_op_num_threads"] == physical_core_count()
    assert info["runtime"].startswith("onnxruntime ")


def test_metadata_is_read_back(backend, tiny) -> None:
    assert backend.metadata == tiny.metadata()
    assert backend.metadata.fingerprint == tiny.metadata().fingerprint
    assert backend.input_shape == (tiny.H, tiny.W, 3)


def test_threads_and_optimisation_options_reach_the_session(tiny_onnx, cpu_only, tiny) -> None:
    opts = OnnxRuntimeOptions(intra_op_num_threads=1, graph_optimization="disable")
    with OnnxRuntimeBackend(tiny_onnx, "cpu", opts) as b:
        assert b.info()["intra_op_num_threads"] == 1
        frames = tiny.frames(2, seed=3)
        np.testing.assert_allclose(
            b.run(frames), tiny.reference(frames, tiny.metadata()), rtol=1e-4, atol=1e-5
        )


def test_threads_stop_spinning_when_a_run_returns(backend, tiny) -> None:
    """Spinning after a run took a core from the ORB features and RANSAC that follow an
    inference (LoopClosureDetector with verify, benchmarks/README.md); results unchanged."""
    options = backend._session.get_session_options()
    assert options.get_session_config_entry("session.force_spinning_stop") == "1"
    frames = tiny.frames(2, seed=4)
    np.testing.assert_allclose(
        backend.run(frames), tiny.reference(frames, tiny.metadata()), rtol=1e-4, atol=1e-5
    )


def test_bad_options_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="graph_optimization"):
        OnnxRuntimeOptions(graph_optimization="max")
    with pytest.raises(InvalidInputError, match="intra_op_num_threads"):
        OnnxRuntimeOptions(intra_op_num_threads=0)
    with pytest.raises(InvalidInputError, match="max_batch"):
        OnnxRuntimeOptions(max_batch=-1)


@pytest.mark.parametrize("option, value", [
    # auto then said "no backend can run ... Install vpr-edge[cpu]" (or ran 4096 threads
    # on 2 cores: 62 s to open, 44 s an inference); True was taken as 1 thread / GPU 1
    ("log_severity", 99), ("log_severity", -5), ("log_severity", "x"),
    ("intra_op_num_threads", 4096), ("intra_op_num_threads", 2**31),
    ("intra_op_num_threads", True), ("inter_op_num_threads", 2**31), ("device_id", True),
])
def test_options_onnxruntime_would_misread_are_refused(option: str, value) -> None:
    with pytest.raises(InvalidInputError, match=option):
        OnnxRuntimeOptions(**{option: value})


def test_large_batches_are_chunked_at_max_batch(tiny_onnx, cpu_only, tiny, monkeypatch) -> None:
    frames = tiny.frames(5, seed=4)
    with OnnxRuntimeBackend(tiny_onnx, "cpu", OnnxRuntimeOptions(max_batch=2)) as b:
        sizes = []
        original = b._infer
        monkeypatch.setattr(b, "_infer", lambda x: sizes.append(len(x)) or original(x))
        out = b.run(frames)
    assert sizes == [2, 2, 1]
    np.testing.assert_allclose(out, tiny.reference(frames, tiny.metadata()), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((1, 10, 14, 3), np.float32), "uint8"),
        (np.zeros((1, 14, 10, 3), np.uint8), r"\[N, 10, 14, 3\]"),
        (np.zeros((1, 10, 14), np.uint8), r"\[N, 10, 14, 3\]"),
        (np.zeros((1, 10, 14, 4), np.uint8), r"\[N, 10, 14, 3\]"),
        (np.zeros((10, 14, 3), np.uint8), r"frame\[None\]"),
        (np.zeros((0, 10, 14, 3), np.uint8), "empty batch"),
        ([[1, 2, 3]], "numpy array"),
    ],
)
def test_wrong_input_is_refused(backend, bad, message) -> None:
    with pytest.raises(InvalidInputError, match=message):
        backend.run(bad)


def test_non_contiguous_input_is_accepted(backend, tiny) -> None:
    frames = tiny.frames(2, seed=5)
    fortran = np.asfortranarray(frames)
    assert not fortran.flags.c_contiguous
    np.testing.assert_array_equal(backend.run(fortran), backend.run(frames))


def test_nan_output_is_an_error_not_a_descriptor(make_model, cpu_only, tiny) -> None:
    meta = tiny.metadata(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    path = make_model("nan.onnx", meta)
    frames = tiny.frames(3, seed=6)
    frames[1] = 0  # all black: zero features, 0/0 in the final normalisation
    with OnnxRuntimeBackend(path, "cpu") as b:
        assert np.isfinite(b.run(frames[[0, 2]])).all()
        with pytest.raises(InferenceError, match=r"NaN/inf .* 1 of 3 frames \(first: frame 1\)"):
            b.run(frames)


def test_static_batch_model_is_padded_and_padding_is_dropped(make_model, cpu_only, tiny) -> None:
    """A fixed-batch export runs any N; the black padding frames (NaN with this model) never
    reach the caller or the NaN check."""
    meta = tiny.metadata(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    path = make_model("static.onnx", meta, batch=2)
    frames = tiny.frames(3, seed=8)
    with OnnxRuntimeBackend(path, "cpu") as b:
        assert (b.min_batch, b.max_batch) == (2, 2)
        out = b.run(frames)
        single = b.run(frames[:1])
    np.testing.assert_allclose(out, tiny.reference(frames, meta), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(single, out[:1], rtol=1e-5, atol=1e-6)


def test_model_without_metadata_is_refused(make_model, cpu_only) -> None:
    path = make_model("plain.onnx", None)
    with pytest.raises(ModelFormatError, match="vpr-export") as info:
        OnnxRuntimeBackend(path, "cpu")
    assert "plain.onnx" in str(info.value)


def test_damaged_metadata_is_refused(make_model, cpu_only) -> None:
    path = make_model("badmeta.onnx", metadata_text='{"model_name": "x"')
    with pytest.raises(ModelFormatError, match="badmeta.onnx.*not valid JSON"):
        OnnxRuntimeBackend(path, "cpu")


def test_truncated_file_is_refused_naming_it(tiny_onnx, cpu_only, tmp_path) -> None:
    cut = tmp_path / "cut.onnx"
    data = tiny_onnx.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError, match="cut.onnx.*truncated"):
        OnnxRuntimeBackend(cut, "cpu")


def test_not_onnx_and_missing_files_are_refused(cpu_only, tmp_path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_text("this is not a model")
    with pytest.raises(ModelFormatError, match="junk.onnx"):
        OnnxRuntimeBackend(junk, "cpu")
    with pytest.raises(ModelFormatError, match="not found"):
        OnnxRuntimeBackend(tmp_path / "absent.onnx", "cpu")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_dtype": "float32"}, r"tensor\(uint8\)"),
        ({"graph_hw": (12, 14)}, r"input shape .*\(metadata says \[N, 10, 14, 3\]\)"),
    ],
)
def test_graph_that_breaks_the_contract_is_refused(make_model, cpu_only, kwargs, message) -> None:
    path = make_model("odd.onnx", **kwargs)
    with pytest.raises(ModelFormatError, match=message):
        OnnxRuntimeBackend(path, "cpu")


def test_closed_backend_refuses_to_run(tiny_onnx, cpu_only, tiny) -> None:
    with OnnxRuntimeBackend(tiny_onnx, "cpu") as b:
        pass
    assert b.closed
    b.close()  # twice is fine
    with pytest.raises(InvalidInputError, match="closed"):
        b.run(tiny.frames(1))


def test_named_gpu_target_that_falls_back_to_cpu_is_refused(
    tiny_onnx, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ONNX Runtime is told CUDA exists but the session really runs on the CPU: refuse."""
    import onnxruntime as ort

    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    with pytest.raises(BackendUnavailableError, match="did not load CUDAExecutionProvider"):
        OnnxRuntimeBackend(tiny_onnx, "cuda")


def test_gpu_target_without_provider_is_refused_before_loading(tiny_onnx, cpu_only) -> None:
    with pytest.raises(BackendUnavailableError, match=r"onnxruntime-gpu not installed.*\[gpu\]"):
        OnnxRuntimeBackend(tiny_onnx, "cuda")


def _as_dict(providers: list) -> dict:
    return {
        (p if isinstance(p, str) else p[0]): ({} if isinstance(p, str) else p[1])
        for p in providers
    }


def test_tensorrt_ep_options_follow_the_model(tiny) -> None:
    fp32 = _as_dict(provider_list("tensorrt", tiny.metadata(), OnnxRuntimeOptions()))
    trt = fp32["TensorrtExecutionProvider"]
    assert trt["trt_fp16_enable"] == "0"
    assert trt["trt_profile_min_shapes"] == "image:1x10x14x3"
    assert trt["trt_profile_max_shapes"] == "image:16x10x14x3"
    assert "trt_engine_cache_enable" not in trt
    assert list(fp32) == [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
    ]

    opts = OnnxRuntimeOptions(max_batch=4, trt_engine_cache_dir="/tmp/c", device_id=1)
    fp16 = _as_dict(provider_list("tensorrt", tiny.metadata(precision="fp16"), opts))
    trt = fp16["TensorrtExecutionProvider"]
    assert trt["trt_fp16_enable"] == "1" and trt["device_id"] == "1"
    assert trt["trt_profile_max_shapes"] == "image:4x10x14x3"
    assert trt["trt_engine_cache_enable"] == "1" and trt["trt_engine_cache_path"] == "/tmp/c"
    assert fp16["CUDAExecutionProvider"] == {"device_id": "1"}

    forced = _as_dict(provider_list("tensorrt", tiny.metadata(), OnnxRuntimeOptions(trt_fp16=True)))
    assert forced["TensorrtExecutionProvider"]["trt_fp16_enable"] == "1"
    assert provider_list("cpu", tiny.metadata(), OnnxRuntimeOptions()) == ["CPUExecutionProvider"]


def test_cuda_ep_gets_options_only_off_the_default_device(tiny) -> None:
    """With options, onnxruntime-gpu 1.31 logged a warning for every session (an H200)."""
    meta = tiny.metadata()
    assert provider_list("cuda", meta, OnnxRuntimeOptions()) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert provider_list("cuda", meta, OnnxRuntimeOptions(device_id=2)) == [
        ("CUDAExecutionProvider", {"device_id": "2"}), "CPUExecutionProvider"]
    assert _as_dict(provider_list("tensorrt", meta, OnnxRuntimeOptions()))[
        "CUDAExecutionProvider"] == {}


def test_physical_core_count_is_within_the_affinity_mask() -> None:
    import os

    n = physical_core_count()
    assert 1 <= n <= len(os.sched_getaffinity(0))


def test_backend_is_a_backend(backend) -> None:
    assert isinstance(backend, Backend)
    assert "onnxruntime-cpu" in repr(backend)


# -- CUDA libraries from NVIDIA's pip packages (onnxruntime.preload_dlls) ----------------------


@pytest.fixture
def preload_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A fake ``onnxruntime.preload_dlls`` that cannot load cuDNN (it prints, as the real one
    does), with the once-per-process memory cleared; the list counts its calls."""
    import onnxruntime as ort

    from vpr_edge.backends import cuda_libraries

    calls: list[str] = []

    def preload_dlls() -> None:
        calls.append("preload")
        print("Failed to load libcudnn.so.9: cannot open shared object file")

    monkeypatch.setattr(ort, "preload_dlls", preload_dlls, raising=False)
    monkeypatch.setattr(cuda_libraries, "_done", None)
    return calls


def test_gpu_target_loads_cuda_libraries_once_and_names_what_failed(
    tiny_onnx, preload_calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime as ort

    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    for _ in range(2):
        with pytest.raises(BackendUnavailableError, match=r"did not load CUDAExecutionProvider"
                           r".*loading CUDA libraries: Failed to load libcudnn\.so\.9"):
            OnnxRuntimeBackend(tiny_onnx, "cuda")
    assert preload_calls == ["preload"]  # once per process


def test_cpu_target_loads_no_cuda_libraries(tiny_onnx, preload_calls, cpu_only) -> None:
    with OnnxRuntimeBackend(tiny_onnx, "cpu"):
        pass
    assert preload_calls == []


def test_onnxruntime_without_preload_dlls_is_fine(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from vpr_edge.backends import cuda_libraries

    monkeypatch.setattr(cuda_libraries, "_done", None)
    assert cuda_libraries.preload_cuda_libraries(SimpleNamespace()) == []


# -- on a GPU (the device machine): tests marked gpu, skipped without CUDA ----------------------


def _needs_provider(provider: str) -> None:
    import onnxruntime as ort

    if provider not in ort.get_available_providers():
        pytest.skip(f"this onnxruntime has no {provider} (pip install 'vpr-edge[gpu]')")


@pytest.mark.gpu
def test_cuda_provider_runs_like_the_cpu(tiny_onnx, tiny) -> None:
    """The CUDA EP really runs (CUDA libraries found without LD_LIBRARY_PATH) and agrees."""
    _needs_provider("CUDAExecutionProvider")
    frames = tiny.frames(5, seed=3)
    with OnnxRuntimeBackend(tiny_onnx, "cuda") as gpu, OnnxRuntimeBackend(tiny_onnx, "cpu") as cpu:
        assert gpu.providers[0] == "CUDAExecutionProvider" and gpu.device == "cuda:0"
        on_gpu, on_cpu = gpu.run(frames), cpu.run(frames)
        # cuDNN sums in another order than the CPU: 2e-4 apart on an H200
        np.testing.assert_allclose(on_gpu, on_cpu, atol=1e-3)
        assert np.sum(on_gpu * on_cpu, axis=1).min() > 0.9999
        # cuDNN picks its algorithms by batch size: 1.3e-4 apart on an H200
        np.testing.assert_allclose(gpu.run(frames[:1]), on_gpu[:1], atol=1e-3)


@pytest.mark.gpu
def test_tensorrt_provider_runs_or_is_refused_by_name(tiny_onnx, tiny) -> None:
    """The TensorRT EP is listed by every onnxruntime-gpu, but needs TensorRT's libraries: it
    either really runs or is refused naming it; never a quiet fall back to CUDA."""
    _needs_provider("TensorrtExecutionProvider")
    try:
        backend = OnnxRuntimeBackend(tiny_onnx, "tensorrt")
    except BackendUnavailableError as exc:
        assert "TensorrtExecutionProvider" in str(exc)
        return
    with backend:
        assert backend.providers[0] == "TensorrtExecutionProvider"
        assert backend.run(tiny.frames(2)).shape == (2, tiny.DIM)


def test_running_out_of_memory_in_inference_says_so(backend, tiny) -> None:
    """ONNX Runtime's arena failing to allocate came out as its own raw `Fail` exception."""
    from vpr_edge.errors import OutOfMemoryError

    class Session:
        def run(self, outputs, feeds):
            raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : bfc_arena.cc:359 "
                               "AllocateRawInternal Failed to allocate memory for requested "
                               "buffer of size 1073741824")

    backend._session = Session()
    frames = np.zeros((2, tiny.H, tiny.W, 3), dtype=np.float32)
    with pytest.raises(OutOfMemoryError, match="not enough memory to run the model"):
        backend._infer(frames)
