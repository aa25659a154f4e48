"""TensorRT backend: header checks, module choice, buffers and chunking, with fakes.

No TensorRT or GPU here, so these tests replace three things with small fakes that follow
the real APIs' shapes: the ``tensorrt`` module (Runtime, ICudaEngine with named IO tensors
and an optimisation profile, IExecutionContext with ``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``), the engine file module (header read/check) and
the CUDA memory module (device "memory" is host memory, copies are ``ctypes.memmove``). The
fake context computes the tiny test model from the bytes at the bound addresses, so the data
path (pinned buffers, byte counts, padding, chunking, copy-out) is really exercised.

The ``gpu`` tests at the end run a real engine given by ``VPR_EDGE_TEST_ENGINE``.
"""

from __future__ import annotations

import ctypes
import os
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from vpr_edge import engine_file
from vpr_edge.backends import open_backend
from vpr_edge.backends import tensorrt_backend as trt_backend
from vpr_edge.errors import (
    BackendUnavailableError,
    CudaError,
    EngineMismatchError,
    InferenceError,
    InvalidInputError,
    MissingDependencyError,
    ModelFormatError,
    OutOfMemoryError,
)
from vpr_edge.metadata import ModelMetadata

# -- fake engine file module -----------------------------------------------------------------


@dataclass
class FakeHeader:
    model: ModelMetadata
    tensorrt_module: str = "tensorrt"
    tensorrt_version: str = "10.9.0"
    compute_capability: object = (8, 7)
    builder: dict = field(default_factory=dict)
    device_name: str | None = None


class FakeEngineFileApi:
    """Records calls so tests can check the header is read and checked before the bytes."""

    def __init__(self, header: FakeHeader, blob: bytes = b"good-engine") -> None:
        self.header, self.blob, self.calls = header, blob, []

    def read_engine_header(self, path):
        self.calls.append("read_header")
        return self.header

    def read_engine_file(self, path):
        self.calls.append("read_file")
        return self.header, self.blob

    def check_engine_compatible(self, header, **here):
        self.calls.append(("check", here["tensorrt_module"], here["tensorrt_version"],
                           here["compute_capability"]))
        engine_file.check_engine_compatible(header, **here)

    is_version_compatible = staticmethod(engine_file.is_version_compatible)


# -- fake tensorrt module --------------------------------------------------------------------


class _Enum:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"DataType.{self.name}"


def make_fake_trt(tiny, name: str = "tensorrt", version: str = "10.9.0", *,
                  static_batch: int | None = None, max_batch: int = 4,
                  input_dtype: str = "UINT8", poison: bool = False) -> types.ModuleType:
    trt = types.ModuleType(name)
    trt.__version__ = version
    trt.DataType = types.SimpleNamespace(**{n: _Enum(n) for n in ("FLOAT", "HALF", "UINT8")})
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT", NONE="NONE")
    trt.runs = []  # batch sizes given to execute_async_v3
    trt.deserialized = []
    trt.loggers = []  # given to Runtime(); like TensorRT, all runtimes log to the first one

    class ILogger:
        Severity = types.SimpleNamespace(INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3, VERBOSE=4)

        def __init__(self) -> None:
            pass

    trt.ILogger = ILogger
    meta = tiny.metadata()
    h, w, dim = meta.input_height, meta.input_width, meta.dim

    class Context:
        def __init__(self) -> None:
            self.addr, self.shape = {}, None

        def set_input_shape(self, tensor, shape):
            assert tensor == "image"
            n = shape[0]
            lo, hi = (static_batch, static_batch) if static_batch else (1, max_batch)
            if not lo <= n <= hi or tuple(shape[1:]) != (h, w, 3):
                return False
            self.shape = tuple(shape)
            return True

        def set_tensor_address(self, tensor, ptr):
            self.addr[tensor] = ptr
            return True

        def execute_async_v3(self, stream_handle):
            assert isinstance(stream_handle, int)
            n = self.shape[0]
            nbytes = n * h * w * 3
            raw = (ctypes.c_uint8 * nbytes).from_address(self.addr["image"])
            images = np.frombuffer(raw, np.uint8).reshape(n, h, w, 3)
            out = tiny.reference(images, meta).astype(np.float32)
            if poison:
                out[-1, 0] = np.nan
            ctypes.memmove(self.addr["descriptor"], out.ctypes.data, out.nbytes)
            trt.runs.append(n)
            return True

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i):
            return ("image", "descriptor")[i]

        def get_tensor_mode(self, tensor):
            return "INPUT" if tensor == "image" else "OUTPUT"

        def get_tensor_dtype(self, tensor):
            return getattr(trt.DataType, input_dtype if tensor == "image" else "FLOAT")

        def get_tensor_shape(self, tensor):
            b = static_batch or -1
            return (b, h, w, 3) if tensor == "image" else (b, dim)

        def get_tensor_profile_shape(self, tensor, profile):
            assert profile == 0 and static_batch is None
            return (1, h, w, 3), (1, h, w, 3), (max_batch, h, w, 3)

        def create_execution_context(self):
            return Context()

    class Runtime:
        def __init__(self, logger) -> None:
            trt.loggers.append(logger)
            self.logger = trt.loggers[0]
            self.engine_host_code_allowed = False

        def deserialize_cuda_engine(self, blob):
            trt.deserialized.append(blob)
            if blob == b"engine-for-other-gpus":  # TensorRT-RTX 1.7's words on an H200
                self.logger.log(ILogger.Severity.ERROR, (
                    "IRuntime::deserializeCudaEngine: Error Code 6: API Usage Error (The engine "
                    "cannot run on this GPU, which has compute capability 9.0. Supported compute "
                    "capabilities: 8.0 8.6 8.9 12.0. TensorRT-RTX does not support this compute "
                    "capability, so the engine cannot be rebuilt for it.)"))
                return None
            if blob == b"engine-for-another-gpu":  # full TensorRT's words
                self.logger.log(ILogger.Severity.ERROR, (
                    "The engine plan file is generated on an incompatible device, expecting "
                    "compute 8.7 got compute 9.0, please rebuild."))
                return None
            if blob != b"good-engine":
                self.logger.log(ILogger.Severity.ERROR, "Serialization assertion failed")
                return None
            return Engine()

    trt.Runtime = Runtime

    def nptype(dt):
        return {"FLOAT": np.float32, "HALF": np.float16, "UINT8": np.uint8}[dt.name]

    trt.nptype = nptype
    return trt


# -- fake cuda memory ------------------------------------------------------------------------


class FakeCuda:
    """Host memory standing in for device and pinned memory; copies are real memmoves."""

    def __init__(self, capability=(8, 7), fail: bool = False) -> None:
        self.capability, self.fail, self.buffers = capability, fail, []
        fake = self

        class _Buf:
            def __init__(self, shape, dtype=np.uint8):
                self._arr = np.zeros(shape, dtype)
                self.ptr, self.nbytes, self.closed = self._arr.ctypes.data, self._arr.nbytes, False
                fake.buffers.append(self)

            @property
            def array(self):
                return self._arr

            def close(self):
                self.closed = True

        class Stream(_Buf):
            def __init__(self):
                super().__init__((1,))
                self.handle = 1234

            def synchronize(self):
                pass

        self.Stream = Stream
        self.PinnedHostBuffer = _Buf
        self.DeviceBuffer = lambda nbytes: _Buf((nbytes,))

    def cudart(self):
        return None

    def set_device(self, device):
        if self.fail:
            raise CudaError("cudaSetDevice(0) failed: cudaErrorNoDevice (no CUDA-capable device "
                            "is detected)", 100, "cudaErrorNoDevice")

    def compute_capability(self, device):
        return self.capability

    def device_count(self):
        return 0 if self.fail else 1

    @staticmethod
    def memcpy_htod_async(dst, src, nbytes, stream):
        ctypes.memmove(dst, src, nbytes)

    memcpy_dtoh_async = memcpy_htod_async


@pytest.fixture
def engine_path(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.engine"
    path.write_bytes(b"header+engine (content read by the fake engine file module)")
    return path


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch, tiny):
    """Install fakes; returns a namespace to reconfigure them per test."""
    ns = types.SimpleNamespace()

    def install(*, header=None, blob=b"good-engine", modules=("tensorrt",), cuda=None, **trt_kw):
        ns.api = FakeEngineFileApi(header or FakeHeader(tiny.metadata()), blob)
        ns.cuda = cuda or FakeCuda()
        ns.trt = {}
        for name in ("tensorrt", "tensorrt_lean", "tensorrt_rtx"):
            if name in modules:
                ns.trt[name] = make_fake_trt(tiny, name, **trt_kw)
                monkeypatch.setitem(sys.modules, name, ns.trt[name])
            else:
                monkeypatch.setitem(sys.modules, name, None)
        monkeypatch.setattr(trt_backend, "engine_file_api", lambda: ns.api)
        monkeypatch.setattr(trt_backend, "cuda_memory", ns.cuda)
        return ns

    ns.install = install
    return ns


def test_runs_the_engine_and_matches_the_reference(fakes, engine_path, tiny) -> None:
    f = fakes.install()
    frames = tiny.frames(3, seed=11)
    with trt_backend.TensorRTBackend(engine_path) as b:
        out = b.run(frames)
        assert b.name == "tensorrt" and b.device == "cuda:0"
        assert b.providers == ("tensorrt 10.9.0",)
        assert (b.min_batch, b.max_batch) == (1, 4)
        assert b.checksum_verified  # the engine's bytes against its header's sha256
        info = b.info()
        assert info["runtime"] == "tensorrt 10.9.0" and info["compute_capability"] == "8.7"
    np.testing.assert_allclose(out, tiny.reference(frames, tiny.metadata()), rtol=1e-6)
    assert f.trt["tensorrt"].runs == [3]
    assert all(buf.closed for buf in f.cuda.buffers)  # close() freed every buffer and stream


def test_header_is_checked_before_the_engine_is_read(fakes, engine_path, tiny) -> None:
    f = fakes.install()
    with trt_backend.TensorRTBackend(engine_path):
        pass
    assert f.api.calls == [
        "read_header", ("check", "tensorrt", "10.9.0", (8, 7)), "read_file"
    ]


@pytest.mark.parametrize(
    ("header_changes", "field_name"),
    [
        ({"tensorrt_version": "10.3.0"}, "tensorrt_version"),
        ({"compute_capability": (9, 0)}, "compute_capability"),
        ({"compute_capability": "9.0"}, "compute_capability"),
    ],
)
def test_mismatched_engine_is_refused_before_deserialising(
    fakes, engine_path, tiny, header_changes, field_name
) -> None:
    f = fakes.install(header=FakeHeader(tiny.metadata(), **header_changes))
    with pytest.raises(EngineMismatchError, match=field_name):
        trt_backend.TensorRTBackend(engine_path)
    assert "read_file" not in f.api.calls
    assert f.trt["tensorrt"].deserialized == []


def test_mismatch_message_names_the_file_and_the_fix(fakes, engine_path, tiny) -> None:
    f = fakes.install(header=FakeHeader(tiny.metadata(), tensorrt_version="10.3.0"))

    def terse_check(header, **here):
        raise EngineMismatchError("tensorrt_version differs: 10.3.0 != 10.9.0")

    f.api.check_engine_compatible = terse_check
    with pytest.raises(EngineMismatchError) as info:
        trt_backend.TensorRTBackend(engine_path)
    text = str(info.value)
    assert text.startswith(f"{engine_path}: tensorrt_version differs")
    assert "rebuild the engine on this machine" in text and "vpr-edge engine build" in text


def test_capability_is_passed_in_the_headers_representation(fakes, engine_path, tiny) -> None:
    f = fakes.install(header=FakeHeader(tiny.metadata(), compute_capability="8.7"))
    with trt_backend.TensorRTBackend(engine_path):
        pass
    assert ("check", "tensorrt", "10.9.0", "8.7") in f.api.calls


def test_the_module_the_header_names_is_preferred(fakes, engine_path, tiny) -> None:
    header = FakeHeader(tiny.metadata(), tensorrt_module="tensorrt_rtx", compute_capability=None)
    fakes.install(header=header, modules=("tensorrt", "tensorrt_rtx"))
    with trt_backend.TensorRTBackend(engine_path) as b:
        assert b.info()["runtime"] == "tensorrt_rtx 10.9.0"
        assert b.tensorrt_module == "tensorrt_rtx"


def test_the_lean_runtime_runs_a_version_compatible_engine(fakes, engine_path, tiny) -> None:
    """Engine headers name the builder (full TensorRT); on a robot with only the lean runtime
    a version-compatible engine runs, with the lean runtime it embeds allowed to load."""
    header = FakeHeader(tiny.metadata(), builder={"version_compatible": True})
    f = fakes.install(header=header, modules=("tensorrt_lean",), version="10.9.0")
    frames = tiny.frames(2, seed=3)
    with trt_backend.TensorRTBackend(engine_path) as b:
        assert b.tensorrt_module == "tensorrt_lean"
        assert b._runtime.engine_host_code_allowed is True
        np.testing.assert_allclose(b.run(frames), tiny.reference(frames, tiny.metadata()),
                                   rtol=1e-6)
    assert f.trt["tensorrt_lean"].runs == [2]


def test_the_lean_runtime_refuses_other_versions_before_deserialising(fakes, engine_path,
                                                                       tiny) -> None:
    header = FakeHeader(tiny.metadata(), builder={"version_compatible": True})
    f = fakes.install(header=header, modules=("tensorrt_lean",), version="10.11.0")
    with pytest.raises(EngineMismatchError, match=r"tensorrt_version: .*lean runtime.*its own "
                       r"version.*tensorrt 10\.9\.0.*tensorrt_lean 10\.11\.0"):
        trt_backend.TensorRTBackend(engine_path)
    assert f.trt["tensorrt_lean"].deserialized == []


def test_the_lean_runtime_refuses_other_engines_before_deserialising(fakes, engine_path,
                                                                      tiny) -> None:
    f = fakes.install(modules=("tensorrt_lean",))
    with pytest.raises(EngineMismatchError, match=r"lean runtime.*--version-compatible.*"
                       r"vpr-edge\[tensorrt\]") as info:
        trt_backend.TensorRTBackend(engine_path)
    assert str(engine_path) in str(info.value)
    assert f.trt["tensorrt_lean"].deserialized == []


def test_host_code_stays_refused_for_ordinary_engines(fakes, engine_path, tiny) -> None:
    fakes.install()
    with trt_backend.TensorRTBackend(engine_path) as b:
        assert b._runtime.engine_host_code_allowed is False


def test_every_runtime_shares_tensorrts_one_logger(fakes, engine_path, tiny) -> None:
    """TensorRT logs to the first logger a process gives it: a second backend with a logger of
    its own would lose its errors. Here the second engine is damaged."""
    f = fakes.install()
    first = trt_backend.TensorRTBackend(engine_path)
    f.api.blob = b"garbage"
    with pytest.raises(ModelFormatError, match="Serialization assertion failed"):
        trt_backend.TensorRTBackend(engine_path)
    first.close()
    loggers = f.trt["tensorrt"].loggers
    assert len(loggers) == 2 and loggers[0] is loggers[1]


def test_an_error_reports_only_what_tensorrt_logged_since_it_began(fakes, engine_path,
                                                                   tiny) -> None:
    f = fakes.install()
    with trt_backend.TensorRTBackend(engine_path) as b:
        severity = f.trt["tensorrt"].ILogger.Severity
        b._trt_logger.log(severity.ERROR, "a complaint while loading, long ago")
        b._context.execute_async_v3 = lambda handle: False
        with pytest.raises(InferenceError, match="execute_async_v3 failed") as info:
            b.run(tiny.frames(1))
    assert "long ago" not in str(info.value)


def test_engine_from_a_module_that_is_missing_here_is_a_mismatch(fakes, engine_path, tiny) -> None:
    header = FakeHeader(tiny.metadata(), tensorrt_module="tensorrt_rtx")
    fakes.install(header=header, modules=("tensorrt",))
    with pytest.raises(EngineMismatchError, match="tensorrt_module"):
        trt_backend.TensorRTBackend(engine_path)


def test_no_tensorrt_module_names_the_extra(fakes, engine_path) -> None:
    fakes.install(modules=())
    with pytest.raises(MissingDependencyError, match=r"tensorrt, tensorrt_lean, tensorrt_rtx.*"
                       r"vpr-edge\[tensorrt\]"):
        trt_backend.TensorRTBackend(engine_path)


def test_no_gpu_is_backend_unavailable(fakes, engine_path) -> None:
    fakes.install(cuda=FakeCuda(fail=True))
    with pytest.raises(BackendUnavailableError, match="cudaErrorNoDevice"):
        trt_backend.TensorRTBackend(engine_path)


def test_a_runtime_cuda_cannot_start_is_backend_unavailable(fakes, engine_path) -> None:
    """TensorRT raises a bare TypeError ("factory function returned nullptr") when CUDA
    fails to start (a container without --gpus, a driver/library mismatch): it escaped
    open_backend as a traceback."""
    f = fakes.install()
    severity = f.trt["tensorrt"].ILogger.Severity

    def no_cuda(logger):
        logger.log(severity.ERROR, "[runtime.cpp::isCudaInstalledCorrectly::41] Error Code 6: "
                   "Internal Error (CUDA initialization failure with error 35.)")
        raise TypeError("pybind11::init(): factory function returned nullptr")

    f.trt["tensorrt"].Runtime = no_cuda
    with pytest.raises(BackendUnavailableError, match=r"cannot create its runtime here .*"
                       r"CUDA initialization failure with error 35.*nvidia-smi"):
        trt_backend.TensorRTBackend(engine_path)


def test_gpu_memory_running_out_while_loading_is_not_a_damaged_file(fakes, engine_path) -> None:
    """TensorRT returns None from deserialize_cuda_engine when the GPU has no room for the
    engine (a Jetson under load): the message called the file damaged and said rebuild it."""
    f = fakes.install()
    severity = f.trt["tensorrt"].ILogger.Severity

    def no_room(self, blob):
        self.logger.log(severity.ERROR, "[defaultAllocator.cpp::allocate::20] Error Code 1: "
                        "Cuda Runtime (out of memory)")
        return None

    f.trt["tensorrt"].Runtime.deserialize_cuda_engine = no_room
    with pytest.raises(OutOfMemoryError, match="not enough GPU memory to load the engine") as info:
        trt_backend.TensorRTBackend(engine_path)
    assert "damaged" not in str(info.value)


def test_engine_tensorrt_cannot_deserialize_is_refused(fakes, engine_path) -> None:
    fakes.install(blob=b"garbage")
    with pytest.raises(ModelFormatError, match=r"could not deserialize.*Serialization assertion"
                       r".*may be damaged; rebuild the engine on this machine.*vpr-edge engine "
                       r"build MODEL\.fp16\.onnx"):
        trt_backend.TensorRTBackend(engine_path)


@pytest.mark.parametrize("blob", [b"engine-for-other-gpus", b"engine-for-another-gpu"])
def test_engine_the_runtime_refuses_for_this_gpu_is_a_mismatch_not_damage(
        fakes, engine_path, blob) -> None:
    """On an H200, TensorRT-RTX refused an engine for 8.0-12.0 while deserialising, and the
    message called the file damaged and suggested trtexec (whose engines vpr-edge refuses)."""
    fakes.install(blob=blob)
    with pytest.raises(EngineMismatchError) as info:
        trt_backend.TensorRTBackend(engine_path)
    text = str(info.value)
    assert "cannot run this engine on this GPU" in text and "9.0" in text
    assert "vpr-edge engine build MODEL.fp16.onnx" in text
    assert "damaged" not in text


def test_engine_that_breaks_the_contract_is_refused(fakes, engine_path) -> None:
    f = fakes.install(input_dtype="FLOAT")
    with pytest.raises(ModelFormatError, match=r"input dtype float32 \(expected uint8\)"):
        trt_backend.TensorRTBackend(engine_path)
    assert all(buf.closed for buf in f.cuda.buffers)


def test_batches_above_the_profile_are_chunked(fakes, engine_path, tiny) -> None:
    f = fakes.install(max_batch=4)
    frames = tiny.frames(10, seed=12)
    with trt_backend.TensorRTBackend(engine_path) as b:
        out = b.run(frames)
    assert f.trt["tensorrt"].runs == [4, 4, 2]
    np.testing.assert_allclose(out, tiny.reference(frames, tiny.metadata()), rtol=1e-6)


def test_user_max_batch_caps_the_buffers(fakes, engine_path, tiny) -> None:
    f = fakes.install(max_batch=8)
    with trt_backend.TensorRTBackend(engine_path, max_batch=3) as b:
        assert b.max_batch == 3 and b.profile_batch == (1, 8)
        b.run(tiny.frames(7))
    assert f.trt["tensorrt"].runs == [3, 3, 1]
    assert max(buf.nbytes for buf in f.cuda.buffers) == 3 * tiny.H * tiny.W * 3


def test_numpy_ints_are_taken_and_bools_refused(fakes, engine_path, tiny) -> None:
    """device_id=np.argmax(free) was refused as "device_id must be >= 0, got np.int64(0)"
    (the ONNX Runtime backends take it), and device_id=True ran on device 1."""
    fakes.install(max_batch=8)
    with trt_backend.TensorRTBackend(engine_path, device_id=np.int64(0),
                                     max_batch=np.int64(3)) as b:
        assert (b.device, b.max_batch) == ("cuda:0", 3) and type(b.max_batch) is int
        b.run(tiny.frames(4))
    for options in ({"device_id": True}, {"max_batch": True}, {"device_id": -1},
                    {"max_batch": 0}, {"device_id": 0.0}):
        with pytest.raises(InvalidInputError, match="must be"):
            trt_backend.TensorRTBackend(engine_path, **options)


def test_max_batch_below_a_static_batch_is_said(fakes, engine_path, tiny, caplog) -> None:
    import logging

    fakes.install(static_batch=4)
    with caplog.at_level(logging.WARNING, logger="vpr_edge"), \
            trt_backend.TensorRTBackend(engine_path, max_batch=2) as b:
        assert (b.min_batch, b.max_batch) == (4, 4)
    assert "max_batch=2 is below the engine profile's min batch 4" in caplog.text


def test_close_waits_for_the_stream_before_freeing(fakes, engine_path, tiny) -> None:
    """After a failed run, copies may still be queued on the stream: freeing the buffers
    under them would let the GPU write freed memory."""
    f = fakes.install()
    b = trt_backend.TensorRTBackend(engine_path)
    seen = []
    b._stream.synchronize = lambda: seen.append([buf.closed for buf in f.cuda.buffers])
    b.close()
    assert seen and not any(seen[0])
    assert all(buf.closed for buf in f.cuda.buffers)


def test_static_batch_engine_is_padded(fakes, engine_path, tiny) -> None:
    f = fakes.install(static_batch=2)
    frames = tiny.frames(3, seed=13)
    with trt_backend.TensorRTBackend(engine_path) as b:
        assert (b.min_batch, b.max_batch) == (2, 2)
        out = b.run(frames)
    assert f.trt["tensorrt"].runs == [2, 2]  # the last chunk of 1 ran padded to 2
    np.testing.assert_allclose(out, tiny.reference(frames, tiny.metadata()), rtol=1e-6)


def test_concurrent_runs_do_not_mix_their_buffers(fakes, engine_path, tiny, monkeypatch) -> None:
    """The pinned buffers and context are shared: run() must serialise callers."""
    import threading
    import time

    f = fakes.install()
    slow = FakeCuda.memcpy_htod_async

    def slow_copy(dst, src, nbytes, stream):
        time.sleep(0.002)  # widen the window between filling the input and running
        slow(dst, src, nbytes, stream)

    monkeypatch.setattr(f.cuda, "memcpy_htod_async", slow_copy)
    batches = [tiny.frames(2, seed=s) for s in range(2)]
    expected = [tiny.reference(b, tiny.metadata()) for b in batches]
    errors = []
    with trt_backend.TensorRTBackend(engine_path) as b:

        def worker(i: int) -> None:
            for _ in range(10):
                if not np.allclose(b.run(batches[i]), expected[i], rtol=1e-6):
                    errors.append(i)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


def test_nan_from_the_engine_is_an_error(fakes, engine_path, tiny) -> None:
    fakes.install(poison=True)
    pat = r"NaN/inf .*first: frame 1\).*FP32"
    with trt_backend.TensorRTBackend(engine_path) as b, pytest.raises(InferenceError, match=pat):
        b.run(tiny.frames(2))


def test_auto_selects_tensorrt_for_an_engine_file(fakes, engine_path, monkeypatch, caplog) -> None:
    import logging

    f = fakes.install()
    monkeypatch.setattr("vpr_edge.backends.cuda_memory.device_count", f.cuda.device_count)
    monkeypatch.setattr("vpr_edge.backends.cuda_memory.cudart", f.cuda.cudart)
    with caplog.at_level(logging.INFO, logger="vpr_edge"), open_backend(engine_path) as b:
        assert b.name == "tensorrt"
    assert "chose tensorrt on cuda:0" in caplog.text


# -- real GPU --------------------------------------------------------------------------------

ENGINE_ENV = "VPR_EDGE_TEST_ENGINE"
ONNX_ENV = "VPR_EDGE_TEST_ONNX"


@pytest.mark.gpu
def test_real_engine_runs() -> None:
    """Runs the engine file in $VPR_EDGE_TEST_ENGINE (built by vpr-export on this GPU); with
    $VPR_EDGE_TEST_ONNX also set, compares with ONNX Runtime on the CPU."""
    path = os.environ.get(ENGINE_ENV)
    if not path:
        pytest.skip(f"set {ENGINE_ENV} to a vpr-edge engine file built on this GPU")
    with open_backend(path, backend="tensorrt") as b:
        h, w, _ = b.input_shape
        frames = np.random.default_rng(0).integers(0, 256, (b.max_batch + 1, h, w, 3), np.uint8)
        out = b.run(frames)
        assert out.shape == (len(frames), b.dim) and out.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-2)
        np.testing.assert_allclose(b.run(frames[:1]), out[:1], atol=1e-3)  # batch-independent
    onnx_path = os.environ.get(ONNX_ENV)
    if onnx_path:
        with open_backend(onnx_path, backend="onnxruntime-cpu") as ref:
            cos = np.sum(ref.run(frames) * out, axis=1)
        assert cos.min() >= 0.999, f"engine vs ONNX cosine min {cos.min():.5f}"


def test_engine_file_module_offers_what_the_backend_calls() -> None:
    """The backend calls these functions of vpr_edge.engine_file (written with the
    exporter); this catches a drift of names or keywords once that module exists."""
    import importlib.util
    import inspect

    if importlib.util.find_spec("vpr_edge.engine_file") is None:
        pytest.skip("vpr_edge.engine_file not written yet")
    api = trt_backend.engine_file_api()
    for name in ("read_engine_header", "read_engine_file", "check_engine_compatible",
                 "is_version_compatible"):
        assert callable(getattr(api, name, None)), f"vpr_edge.engine_file.{name} missing"
    params = inspect.signature(api.check_engine_compatible).parameters
    for keyword in ("tensorrt_module", "tensorrt_version", "compute_capability"):
        assert keyword in params, f"check_engine_compatible lacks keyword {keyword!r}"


def test_inference_selects_the_engines_gpu_on_the_calling_thread(fakes, engine_path,
                                                                   tiny) -> None:
    """The current CUDA device is per host thread: a worker thread (a ROS callback) starts on
    device 0, so run() must select device_id itself before it enqueues."""
    import threading

    class PerThreadDevice(FakeCuda):
        def __init__(self):
            super().__init__()
            self.local = threading.local()

        def set_device(self, device):
            self.local.device = device

        def current(self):
            return getattr(self.local, "device", 0)

    cuda = PerThreadDevice()
    fakes.install(cuda=cuda)
    backend = trt_backend.TensorRTBackend(engine_path, device_id=1)
    seen = []
    launch = backend._context.execute_async_v3
    backend._context.execute_async_v3 = lambda h: seen.append(cuda.current()) or launch(h)
    worker = threading.Thread(target=lambda: backend.run(tiny.frames(2)))
    worker.start()
    worker.join()
    backend.close()
    assert seen == [1]
