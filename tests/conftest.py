"""Shared fixtures: the real data in ../shared/data, the GPU marker, the long mode, and a
tiny ONNX model that honours the vpr-edge model contract (see ``build_model``)."""

from __future__ import annotations

import importlib.util
import os
import signal
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest

from vpr_edge.metadata import ONNX_METADATA_KEY, ModelMetadata

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C as an interactive Python has it (KeyboardInterrupt), whatever started pytest: a
    shell's background job (`cmd &`, `nohup`) inherits SIGINT ignored, and Python then keeps
    it so, which the tests of signal handling would take for a defect."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def shared_data_root() -> Path:
    """``$VPR_EDGE_DATA`` or ``<repo>/../shared/data`` (read-only, never copied here)."""
    return Path(os.environ.get("VPR_EDGE_DATA", REPO_ROOT.parent / "shared" / "data"))


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not present at {path} (set VPR_EDGE_DATA)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _require(shared_data_root())


@pytest.fixture(scope="session")
def corridor_dir(shared_data: Path) -> Path:
    return _require(shared_data / "corridor")


@pytest.fixture(scope="session")
def gardens_point_dir(shared_data: Path) -> Path:
    return _require(shared_data / "gardens_point")


@pytest.fixture(scope="session")
def rosbag_path(shared_data: Path) -> Path:
    return _require(shared_data / "rosbag" / "spot_hand_color_image.bag")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", default=False,
                     help="reliability tests in their long (soak) mode: 100 crash trials, "
                          "a 10-minute soak")


@pytest.fixture(scope="session")
def long_mode(request: pytest.FixtureRequest) -> bool:
    """True under ``pytest --long`` (or VPR_EDGE_LONG=1)."""
    return bool(request.config.getoption("--long") or os.environ.get("VPR_EDGE_LONG"))


def _load_test_module(relative: str) -> ModuleType:
    """Import a helper file under tests/ by path (tests are not a package)."""
    path = REPO_ROOT / "tests" / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def crash_child() -> ModuleType:
    """tests/reliability/map_crash_child.py: the crash-test child and its checks."""
    return _load_test_module("reliability/map_crash_child.py")


@pytest.fixture(scope="session")
def bag_writer() -> ModuleType:
    """tests/bag_writer.py: writes small ROS 1 bags (needs the ``ros`` extra)."""
    pytest.importorskip("rosbags")
    return _load_test_module("bag_writer.py")


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if any(item.get_closest_marker("gpu") for item in items) and not _has_cuda():
        skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (run on the device machine)")
        for item in items:
            if item.get_closest_marker("gpu"):
                item.add_marker(skip_gpu)


# Tiny ONNX models that honour the vpr-edge model contract, and their numpy reference.

# The graph: ``image`` uint8 [N, H, W, 3] -> Cast -> /255 -> (x - mean) / std -> per-channel
# mean and max over H, W -> [N, 6] -> MatMul with a fixed [6, dim] matrix -> divide by the L2
# norm (no epsilon) -> ``descriptor`` float32 [N, dim]. With mean 0 and std 1 an all-black frame
# gives a zero vector and 0/0 = NaN, the way a broken engine would.

H, W = 10, 14
K, D = 4, 8
DIM = K * D


def tiny_metadata(**changes) -> ModelMetadata:
    meta = ModelMetadata(
        model_name="tiny-test",
        backbone="none",
        num_clusters=K,
        local_dim=D,
        dim=DIM,
        input_height=H,
        input_width=W,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        weights_sha256="ab" * 32,
        package_version="0.0.0",
    )
    return replace(meta, **changes)


def projection(dim: int = DIM) -> np.ndarray:
    return np.random.default_rng(7).standard_normal((6, dim)).astype(np.float32)


def reference(images: np.ndarray, meta: ModelMetadata) -> np.ndarray:
    """What the tiny graph computes, in numpy (float32, as ONNX Runtime does)."""
    x = images.astype(np.float32) / np.float32(255.0)
    x = (x - np.asarray(meta.mean, np.float32)) / np.asarray(meta.std, np.float32)
    feats = np.concatenate([x.mean(axis=(1, 2)), x.max(axis=(1, 2))], axis=1)
    y = feats @ projection(meta.dim)
    return y / np.linalg.norm(y, axis=1, keepdims=True)


def build_model(
    path: Path,
    meta: ModelMetadata | None,
    *,
    input_dtype: str = "uint8",
    graph_hw: tuple[int, int] | None = None,
    metadata_text: str | None = None,
    batch: int | str = "N",
) -> Path:
    """Write the tiny model to ``path``; ``meta=None`` writes no vpr-edge metadata."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    ref = meta or tiny_metadata()
    gh, gw = graph_hw or (ref.input_height, ref.input_width)
    elem = {"uint8": TensorProto.UINT8, "float32": TensorProto.FLOAT}[input_dtype]
    inits = [
        numpy_helper.from_array(np.array(255.0, np.float32), "scale"),
        numpy_helper.from_array(np.asarray(ref.mean, np.float32), "mean"),
        numpy_helper.from_array(np.asarray(ref.std, np.float32), "std"),
        numpy_helper.from_array(projection(ref.dim), "proj"),
    ]
    nodes = [
        helper.make_node("Cast", ["image"], ["x0"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["x0", "scale"], ["x1"]),
        helper.make_node("Sub", ["x1", "mean"], ["x2"]),
        helper.make_node("Div", ["x2", "std"], ["x3"]),
        helper.make_node("ReduceMean", ["x3"], ["avg"], axes=[1, 2], keepdims=0),
        helper.make_node("ReduceMax", ["x3"], ["mx"], axes=[1, 2], keepdims=0),
        helper.make_node("Concat", ["avg", "mx"], ["feats"], axis=1),
        helper.make_node("MatMul", ["feats", "proj"], ["y"]),
        helper.make_node("ReduceL2", ["y"], ["norm"], axes=[1], keepdims=1),
        helper.make_node("Div", ["y", "norm"], ["descriptor"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_vpr",
        [helper.make_tensor_value_info("image", elem, [batch, gh, gw, 3])],
        [helper.make_tensor_value_info("descriptor", TensorProto.FLOAT, [batch, ref.dim])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata_text is not None:
        helper.set_model_props(model, {ONNX_METADATA_KEY: metadata_text})
    elif meta is not None:
        helper.set_model_props(model, {ONNX_METADATA_KEY: meta.to_json()})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def random_frames(n: int, seed: int = 0, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


@pytest.fixture
def make_model(tmp_path: Path) -> Callable[..., Path]:
    """``make_model(name="m.onnx", meta=tiny_metadata(), **build_model_kwargs) -> path``."""

    def make(name: str = "tiny.onnx", meta: ModelMetadata | None = ..., **kwargs) -> Path:
        return build_model(tmp_path / name, tiny_metadata() if meta is ... else meta, **kwargs)

    return make


@pytest.fixture
def tiny_onnx(make_model) -> Path:
    return make_model()


@pytest.fixture
def cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ONNX Runtime report only the CPU provider, whatever is installed."""
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])


@pytest.fixture
def tiny() -> SimpleNamespace:
    """The helpers above, for test modules (which cannot import this conftest by name)."""
    return SimpleNamespace(
        H=H, W=W, DIM=DIM, metadata=tiny_metadata, reference=reference, frames=random_frames,
        build=build_model, projection=projection,
    )
