"""Float16 re-scoring: the embedded ONNX graph, ONNX Runtime vs NumPy, and the fallback."""

from __future__ import annotations

import numpy as np
import pytest

from vpr_edge.index import float16_scores


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch):
    """The module with its cached session forgotten (restored afterwards)."""
    monkeypatch.setattr(float16_scores, "_sessions", {})
    return float16_scores


def candidates(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    d = rng.standard_normal((n, dim)).astype(np.float32)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    d[0, :7] = [0, -0.0, 3e-6, -2e-7, 6e-5, -6.2e-5, 1e-8]  # zeros and float16 subnormals
    q = rng.standard_normal(dim).astype(np.float32)
    return d.astype(np.float16), q / np.linalg.norm(q)


def test_embedded_graph_is_cast_then_matmul() -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto

    model = onnx.load_from_string(float16_scores.MODEL)
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["Cast", "MatMul"]
    assert model.graph.node[0].attribute[0].i == TensorProto.FLOAT
    types = {v.name: v.type.tensor_type.elem_type
             for v in [*model.graph.input, *model.graph.output]}
    assert types == {"candidates": TensorProto.FLOAT16, "queries": TensorProto.FLOAT,
                     "scores": TensorProto.FLOAT}
    assert model.ir_version == 7 and model.opset_import[0].version == 13


@pytest.mark.parametrize("n", [0, 1, 32, 300])
def test_onnxruntime_matches_numpy(fresh, n: int) -> None:
    pytest.importorskip("onnxruntime")
    desc16, q = candidates(max(n, 1), 7168)
    desc16 = desc16[:n]
    assert fresh.engine() == "onnxruntime"
    got = fresh.scores(desc16, q)
    assert got.dtype == np.float32 and got.shape == (n,)
    np.testing.assert_allclose(got, desc16.astype(np.float32) @ q, rtol=0, atol=1e-6)


def test_numpy_when_onnxruntime_is_missing(fresh, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    desc16, q = candidates(5, 64)
    assert fresh.engine() == "numpy"
    np.testing.assert_array_equal(fresh.scores(desc16, q), desc16.astype(np.float32) @ q)


def test_non_contiguous_inputs(fresh) -> None:
    desc16, q = candidates(40, 256)
    rows = desc16[::3]
    wide = np.repeat(q, 2)[::2]
    np.testing.assert_allclose(fresh.scores(rows, wide), rows.astype(np.float32) @ q,
                               rtol=0, atol=1e-6)
    got = fresh.scores(rows, q.astype(np.float64))  # another dtype: converted, not refused
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, rows.astype(np.float32) @ q, rtol=0, atol=1e-6)


def test_float16_subnormals_are_not_flushed(fresh) -> None:
    tiny = np.array([[3e-6, -2e-7, 6e-5, 1e-7] * 4], dtype=np.float16)
    assert np.all(np.abs(tiny[0, :2]) < np.finfo(np.float16).tiny)  # subnormal in float16
    ones = np.ones(16, dtype=np.float32)
    np.testing.assert_allclose(fresh.scores(tiny, ones), tiny.astype(np.float32) @ ones,
                               rtol=1e-6)
