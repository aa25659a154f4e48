"""Scores of float16 descriptors against float32 queries: ``candidates @ queries`` in float32.

The index re-scores a query's graph candidates from the stored float16 descriptors. NumPy
converts float16 to float32 one value at a time (about 1.6 ns per value on the development
VM: 375 us for the 32 x 7168 candidates of one query, half of the whole search), while ONNX
Runtime converts with the CPU's F16C/AVX instructions (the same Cast + MatMul: 49 us). So
when onnxruntime is importable (``vpr-edge[cpu]`` or ``[gpu]``, both have its CPU provider)
the scores come from a two-node ONNX graph run on one CPU thread, else from NumPy. Both
compute float32 dot products of the same float16 values; only the summation order differs
(about 1e-8).

The graph, serialised in :data:`MODEL` (IR 7, opset 13, so any onnxruntime >= 1.8 runs it),
is what this makes with the ``onnx`` package (``tests/vpr_edge/test_float16_scores.py``
checks it)::

    cast = helper.make_node("Cast", ["candidates"], ["candidates32"], to=TensorProto.FLOAT)
    matmul = helper.make_node("MatMul", ["candidates32", "queries"], ["scores"])
    graph = helper.make_graph([cast, matmul], "float16_scores",
                              [tensor("candidates", FLOAT16, ["n", "d"]),
                               tensor("queries", FLOAT, ["d", "m"])],
                              [tensor("scores", FLOAT, ["n", "m"])])
"""

from __future__ import annotations

import logging
import threading

import numpy as np

log = logging.getLogger("vpr_edge")

MODEL = (
    b'\x08\x07\x12\x08vpr-edge:\xbf\x01\n+\n\ncandidates\x12\x0ccandidates32"\x04Cast*\t\n\x02'
    b'to\x18\x01\xa0\x01\x02\n\'\n\x0ccandidates32\n\x07queries\x12\x06scores"\x06MatMul\x12'
    b'\x0efloat16_scoresZ\x1e\n\ncandidates\x12\x10\n\x0e\x08\n\x12\n\n\x03\x12\x01n\n\x03\x12'
    b'\x01dZ\x1b\n\x07queries\x12\x10\n\x0e\x08\x01\x12\n\n\x03\x12\x01d\n\x03\x12\x01mb\x1a\n'
    b'\x06scores\x12\x10\n\x0e\x08\x01\x12\n\n\x03\x12\x01n\n\x03\x12\x01mB\x04\n\x00\x10\r'
)

_lock = threading.Lock()
_sessions: dict[bytes, object | None] = {}  # by graph; None: no onnxruntime (tried once)


def onnxruntime_session(model: bytes, *, arena: bool = True):
    """The cached one-thread ONNX Runtime session of the graph ``model``, or None without
    onnxruntime (tried once per graph). ``arena=False``: no memory arena, which would keep
    the largest output ever made for the process's life."""
    if model in _sessions:
        return _sessions[model]
    with _lock:
        if model not in _sessions:
            try:
                import onnxruntime as ort

                options = ort.SessionOptions()
                options.intra_op_num_threads = 1  # inference owns the other cores
                options.inter_op_num_threads = 1
                options.log_severity_level = 3
                options.enable_cpu_mem_arena = arena
                session = ort.InferenceSession(model, options,
                                               providers=["CPUExecutionProvider"])
            except Exception as exc:  # no onnxruntime, or one that cannot load the graph
                log.debug("scores in numpy instead of onnxruntime (%s)", exc)
                session = None
            _sessions[model] = session
    return _sessions[model]


def _onnxruntime_session():
    return onnxruntime_session(MODEL)


def engine() -> str:
    """``"onnxruntime"`` or ``"numpy"``: what :func:`scores` uses in this process."""
    return "numpy" if _onnxruntime_session() is None else "onnxruntime"


def scores(candidates: np.ndarray, query: np.ndarray) -> np.ndarray:
    """``candidates`` float16 ``[n, d]`` against ``query`` float32 ``[d]``: float32 ``[n]``."""
    session = _onnxruntime_session()
    if session is None or candidates.shape[0] == 0:
        return candidates.astype(np.float32) @ query
    if not candidates.flags.c_contiguous:  # (each numpy call skipped counts after inference)
        candidates = np.ascontiguousarray(candidates)
    if query.dtype != np.float32 or not query.flags.c_contiguous:
        query = np.ascontiguousarray(query, np.float32)
    (out,) = session.run(None, {"candidates": candidates, "queries": query.reshape(-1, 1)})
    return out.reshape(-1)
