"""The TensorRT registration against a recording stand-in of ``tensorrt.plugin``.

Full TensorRT is not installable here, so these tests check our side of the contract: the
decorated functions carry real annotation objects (tensorrt.plugin validates them), shape
inference gives ``[N, K*D]`` in the features' type, autotune offers all-FP16 (the FP32 kernel
does not fit an AOT launch's shared memory), and
``aot_impl`` returns the kernel name, its PTX, one program per image and ``H*W`` as the extra
scalar. What TensorRT does with them is untested here (see export/plugin/README.md).
"""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import pytest

from vpr_edge.errors import MissingDependencyError
from vpr_edge.export.plugin import registration
from vpr_edge.export.plugin.onnx_node import PLUGIN_ID


class Expr:
    """A symbolic dimension: an int or a name, with * as TensorRT's ShapeExpr has it."""

    def __init__(self, value) -> None:
        self.value = value

    def __mul__(self, other: Expr) -> Expr:
        if isinstance(self.value, int) and isinstance(other.value, int):
            return Expr(self.value * other.value)
        return Expr(f"{self.value}*{other.value}")

    def __eq__(self, other) -> bool:
        return self.value == (other.value if isinstance(other, Expr) else other)


class ShapeExprs(list):
    def __init__(self, length: int = 0) -> None:
        super().__init__([None] * length)

    @classmethod
    def from_tuple(cls, values) -> ShapeExprs:
        out = cls()
        out.extend(v if isinstance(v, Expr) else Expr(v) for v in values)
        return out


class TensorDesc:
    def __init__(self, shape, dtype) -> None:
        self.shape_expr = ShapeExprs.from_tuple(shape)
        self.dtype = dtype

    def like(self) -> TensorDesc:
        return TensorDesc(list(self.shape_expr), self.dtype)


class RecordingPluginModule(SimpleNamespace):
    """Just enough of ``tensorrt.plugin`` to record what our decorators hand it."""

    def __init__(self) -> None:
        super().__init__(TensorDesc=TensorDesc, ShapeExprs=ShapeExprs, SymExprs=list,
                         AutoTuneCombination=lambda *args: ("combination", args),
                         KernelLaunchParams=SimpleNamespace,
                         SymInt32=lambda expr: ("int32", expr), functions={})
        for kind in ("register", "autotune", "aot_impl"):
            setattr(self, kind, self._decorator(kind))

    def SymIntExprs(self, length: int) -> list:
        return [None] * length

    def _decorator(self, kind: str):
        def decorate(plugin_id: str):
            def keep(fn):
                self.functions[(kind, plugin_id)] = fn
                return fn
            return keep
        return decorate


@pytest.fixture
def registered(monkeypatch):
    trt = SimpleNamespace(__version__="10.13.0.35", float16="HALF", float32="FLOAT")
    trtp = RecordingPluginModule()
    registration.register_plugin(trt, trtp)
    return trt, trtp


def features(batch="N", dtype="HALF"):
    return (TensorDesc((batch, 112, 15, 20), dtype), TensorDesc((64, 112), dtype),
            TensorDesc((64,), dtype), TensorDesc((64, 112), dtype))


def test_all_three_functions_are_registered_with_real_annotations(registered) -> None:
    _, trtp = registered
    assert set(trtp.functions) == {(k, PLUGIN_ID) for k in ("register", "autotune", "aot_impl")}
    for fn in trtp.functions.values():
        params = inspect.signature(fn).parameters
        assert params["features"].annotation is TensorDesc  # an object, not a string
    describe = inspect.signature(trtp.functions[("register", PLUGIN_ID)]).parameters
    assert [describe[a].annotation for a in registration.ATTRIBUTES] == [int, int, float, int]


def test_output_is_batch_by_k_times_d_in_the_features_type(registered) -> None:
    _, trtp = registered
    out = trtp.functions[("register", PLUGIN_ID)](*features(), 64, 112, 1e-12, 1)
    assert list(out.shape_expr) == [Expr("N"), Expr(64 * 112)] and out.dtype == "HALF"


def test_autotune_offers_all_fp16(registered) -> None:
    _, trtp = registered
    (combination,) = trtp.functions[("autotune", PLUGIN_ID)](*features(), outputs=())
    types, layout = combination[1]
    assert [t.strip() for t in types.split(",")] == ["FP16"] * 5 and layout == "LINEAR"


def test_aot_impl_returns_ptx_and_launch(registered, monkeypatch) -> None:
    pytest.importorskip("triton")
    from vpr_edge.export.plugin import aot

    real = aot.compile_ptx
    monkeypatch.setattr(aot, "compile_ptx", lambda arch, **kw: real(87, **kw))  # no GPU here
    trt, trtp = registered
    inputs = features()
    out = trtp.functions[("register", PLUGIN_ID)](*inputs, 64, 112, 1e-12, 1)
    name, ptx, launch, extra = trtp.functions[("aot_impl", PLUGIN_ID)](
        *inputs, 64, 112, 1e-12, 1, outputs=(out,))
    assert name == "netvlad_kernel" and f".entry {name}(" in ptx and ".target sm_87" in ptx
    assert launch.grid_x == Expr("N") and launch.block_x == 128
    assert 0 < launch.shared_mem <= registration.SHARED_MEMORY_LIMIT
    assert extra == [("int32", Expr(15 * 20))]


@pytest.mark.parametrize("dtype", ["INT8", "FLOAT"])
def test_aot_impl_refuses_other_types(registered, dtype: str) -> None:
    _, trtp = registered
    inputs = features(dtype=dtype)
    with pytest.raises(ValueError, match="runs FP16 in TensorRT.*--fp16"):
        trtp.functions[("aot_impl", PLUGIN_ID)](*inputs, 64, 112, 1e-12, 1,
                                                outputs=(inputs[0],))


@pytest.mark.parametrize("version, ok", [("10.3.0", False), ("10.8.9", False),
                                         ("10.9.0", True), ("11.1.0", True), ("", False)])
def test_tensorrt_version_gate(version: str, ok: bool) -> None:
    assert registration.tensorrt_supports_plugin(version)[0] is ok
    if not ok and version:
        trt = SimpleNamespace(__version__=version, float16=1, float32=2)
        with pytest.raises(MissingDependencyError, match="10.9"):
            registration.register_plugin(trt, RecordingPluginModule())


def test_without_tensorrt_the_builder_is_told_why() -> None:
    ok, reason = registration.prepare_builder("tensorrt_rtx")
    assert not ok and "tensorrt.plugin" in reason
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        ok, reason = registration.prepare_builder("tensorrt")
        assert not ok and "vpr-edge[tensorrt]" in reason
