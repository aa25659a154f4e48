"""Exact search's scores, ``descriptors @ queries.T`` in float32, on one CPU thread.

A map small enough to be searched exactly (``IndexSettings.searches_exactly``) scores every
place with one matrix product. NumPy's product runs in OpenBLAS, on every core, and
OpenBLAS's threads then spin for a while waiting for more work: on the 2-core development VM
they took the cores from the next frame's inference, which then took 9.8 ms instead of 5.6,
and the product itself, after an inference, 2.7 ms instead of 0.6 (200 places, the demo's
map size: ``benchmarks/latency.py``, ``benchmarks/README.md``). So, as
:mod:`~vpr_edge.index.float16_scores` does for re-scoring, the product runs as a one-node
ONNX graph on one ONNX Runtime thread when onnxruntime is importable, and in NumPy otherwise
(a TensorRT-only install, whose inference does not use the CPU's cores). Both compute
float32 dot products of the same values; only the summation order differs (about 1e-7).

The graph, serialised in :data:`MODEL` (IR 7, opset 13), is what this makes with the
``onnx`` package (``tests/vpr_edge/test_float32_scores.py`` checks it)::

    matmul = helper.make_node("MatMul", ["descriptors", "queries"], ["scores"])
    graph = helper.make_graph([matmul], "float32_scores",
                              [tensor("descriptors", FLOAT, ["n", "d"]),
                               tensor("queries", FLOAT, ["d", "m"])],
                              [tensor("scores", FLOAT, ["n", "m"])])

Its session has no memory arena: an arena would keep the largest score matrix ever made (a
batch of queries against a large map searched exactly) for the process's life.
"""

from __future__ import annotations

import numpy as np

from .float16_scores import onnxruntime_session

MODEL = (
    b'\x08\x07\x12\x08vpr-edge:\x92\x01\n&\n\x0bdescriptors\n\x07queries\x12\x06scores"\x06'
    b'MatMul\x12\x0efloat32_scoresZ\x1f\n\x0bdescriptors\x12\x10\n\x0e\x08\x01\x12\n\n\x03'
    b'\x12\x01n\n\x03\x12\x01dZ\x1b\n\x07queries\x12\x10\n\x0e\x08\x01\x12\n\n\x03\x12\x01d'
    b'\n\x03\x12\x01mb\x1a\n\x06scores\x12\x10\n\x0e\x08\x01\x12\n\n\x03\x12\x01n\n\x03\x12'
    b'\x01mB\x04\n\x00\x10\r'
)


def engine() -> str:
    """``"onnxruntime"`` or ``"numpy"``: what :func:`scores` uses in this process."""
    return "numpy" if onnxruntime_session(MODEL, arena=False) is None else "onnxruntime"


def scores(descriptors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """``descriptors`` float32 ``[n, d]`` against ``queries`` float32 ``[m, d]``: float32
    ``[n, m]``, as ``descriptors @ queries.T``."""
    session = onnxruntime_session(MODEL, arena=False)
    if session is None or descriptors.shape[0] == 0 or queries.shape[0] == 0:
        return descriptors @ queries.T
    if descriptors.dtype != np.float32 or not descriptors.flags.c_contiguous:
        descriptors = np.ascontiguousarray(descriptors, np.float32)
    queries_t = np.ascontiguousarray(np.asarray(queries, np.float32).T)
    (out,) = session.run(None, {"descriptors": descriptors, "queries": queries_t})
    return out
