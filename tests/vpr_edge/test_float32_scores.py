"""Exact search's float32 scores: the embedded ONNX graph, ONNX Runtime vs NumPy, the
fallback, and that they keep OpenBLAS's threads from the inference's cores."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from vpr_edge.index import IndexSettings, PlaceIndex, float16_scores, float32_scores


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch):
    """The module with its cached sessions forgotten (restored afterwards)."""
    monkeypatch.setattr(float16_scores, "_sessions", {})
    return float32_scores


def unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_embedded_graph_is_one_matmul() -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto

    model = onnx.load_from_string(float32_scores.MODEL)
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["MatMul"]
    types = {v.name: v.type.tensor_type.elem_type
             for v in [*model.graph.input, *model.graph.output]}
    assert types == {"descriptors": TensorProto.FLOAT, "queries": TensorProto.FLOAT,
                     "scores": TensorProto.FLOAT}
    assert model.ir_version == 7 and model.opset_import[0].version == 13


@pytest.mark.parametrize("n, m", [(0, 1), (1, 1), (285, 1), (300, 7), (5, 0)])
def test_onnxruntime_matches_numpy(fresh, n: int, m: int) -> None:
    pytest.importorskip("onnxruntime")
    rows, queries = unit_rows(n, 7168), unit_rows(m, 7168, seed=1)
    assert fresh.engine() == "onnxruntime"
    got = fresh.scores(rows, queries)
    assert got.dtype == np.float32 and got.shape == (n, m)
    np.testing.assert_allclose(got, rows @ queries.T, rtol=0, atol=1e-6)


def test_numpy_when_onnxruntime_is_missing(fresh, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    rows, queries = unit_rows(6, 64), unit_rows(2, 64, seed=1)
    assert fresh.engine() == "numpy"
    np.testing.assert_array_equal(fresh.scores(rows, queries), rows @ queries.T)


def test_non_contiguous_and_other_dtypes(fresh) -> None:
    rows, queries = unit_rows(40, 256), unit_rows(3, 256, seed=1)
    every_third = rows[::3]
    got = fresh.scores(every_third, queries.astype(np.float64))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, every_third @ queries.T, rtol=0, atol=1e-6)
    np.testing.assert_allclose(fresh.scores(rows, np.asfortranarray(queries)), rows @ queries.T,
                               rtol=0, atol=1e-6)


def test_exact_search_scores_without_numpy_matmul(monkeypatch: pytest.MonkeyPatch) -> None:
    """A map searched exactly scores its places through this module (one ONNX Runtime
    thread), not with NumPy's product, whose OpenBLAS threads took the cores from the next
    inference: same answers, and no ``ndarray @`` in the query."""
    pytest.importorskip("onnxruntime")
    rows = unit_rows(200, 7168)
    index = PlaceIndex(7168, settings=IndexSettings(mode="exact"))
    index.add(rows)
    queries = unit_rows(3, 7168, seed=2)
    expected = rows @ queries.T
    calls = []
    real = float32_scores.scores
    monkeypatch.setattr(float32_scores, "scores",
                        lambda a, b: calls.append(a.shape) or real(a, b))
    found = index.query(queries, k=3)
    assert calls == [(200, 7168)]
    for j, matches in enumerate(found):
        best = np.argsort(-expected[:, j], kind="stable")[:3]
        assert [m.place_id for m in matches] == [int(index.ids()[i]) for i in best]
        np.testing.assert_allclose([m.score for m in matches], expected[best, j], atol=1e-6)
