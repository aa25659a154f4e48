"""The ``vpr_edge::NetVLAD`` node in ONNX Runtime on the CPU, through onnxruntime-extensions.

A numpy implementation of the node contract (see ``onnx_node.py``), registered as a Python
custom op. onnxruntime-extensions registers Python ops in its own domain (``ai.onnx.contrib``)
and only for float32 (a float16 Python op aborts the process), so :func:`ort_session` runs a
copy of the plugin graph whose NetVLAD node is moved to that domain; around an FP16 node it
adds Casts that widen the four FP16 inputs to FP32 and narrow the output back to FP16, which
is exactly the contract (FP16 storage, FP32 arithmetic) the GPU kernel implements. Inputs,
attributes and outputs are those TensorRT's plugin gets. This proves the node contract equals
the layer: the plugin graph and the plain graph give the same descriptors (tests/export/plugin/).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vpr_edge._optional import require

from .onnx_node import PLUGIN_DOMAIN, PLUGIN_OP

ORTX_DOMAIN = "ai.onnx.contrib"
_ortx = None  # onnxruntime_extensions, once the op is registered


def netvlad_reference(features: np.ndarray, weight: np.ndarray, bias: np.ndarray,
                      centroids: np.ndarray, *, eps: float, normalize_input: bool,
                      compute=np.float32) -> np.ndarray:
    """The node's computation in numpy, output in the features' dtype.

    ``compute`` is the arithmetic type: float32 is the contract; float16 shows what a naive
    FP16 layer does (squares above 256 overflow FP16's 65504).
    """
    n, d = features.shape[:2]
    x = features.reshape(n, d, -1).astype(compute)  # [N, D, HW]
    w, b, c = (np.asarray(t, compute) for t in (weight, bias, centroids))
    eps = compute(eps)
    if normalize_input:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)
    logits = np.einsum("kd,ndp->nkp", w, x) + b[None, :, None]
    logits -= logits.max(axis=1, keepdims=True)
    a = np.exp(logits)
    a /= a.sum(axis=1, keepdims=True)  # [N, K, HW]
    v = np.einsum("nkp,ndp->nkd", a, x) - a.sum(axis=2)[:, :, None] * c[None]
    v /= np.maximum(np.linalg.norm(v, axis=2, keepdims=True), eps)
    v = v.reshape(n, -1)
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), eps)
    return v.astype(features.dtype)


def check_node(node, initializers: dict) -> None:
    """The node's attributes agree with its weight initializers (checked before the session is
    made: an exception inside a Python custom op aborts the whole process)."""
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    missing = {"num_clusters", "dim", "eps", "normalize_input"} - attrs.keys()
    if missing:
        raise ValueError(f"vpr_edge::NetVLAD node {node.name} lacks attributes {sorted(missing)}")
    k, d = int(attrs["num_clusters"]), int(attrs["dim"])
    shapes = [tuple(initializers[i].dims) if i in initializers else None for i in node.input[1:]]
    if shapes != [(k, d), (k,), (k, d)]:
        raise ValueError(f"vpr_edge::NetVLAD node {node.name}: weight/bias/centroids shapes "
                         f"{shapes} do not fit num_clusters={k}, dim={d}")


def _register():
    """Register the op once per process; returns onnxruntime_extensions."""
    global _ortx
    if _ortx is not None:
        return _ortx
    ortx = require("onnxruntime_extensions", extra="export",
                   purpose="running the NetVLAD plugin node in ONNX Runtime")
    attrs = {"num_clusters": ortx.PyCustomOpDef.dt_int64, "dim": ortx.PyCustomOpDef.dt_int64,
             "eps": ortx.PyCustomOpDef.dt_float,
             "normalize_input": ortx.PyCustomOpDef.dt_int64}
    f32 = ortx.PyCustomOpDef.dt_float

    @ortx.onnx_op(op_type=PLUGIN_OP, inputs=[f32] * 4, outputs=[f32], attrs=attrs)
    def netvlad(features, weight, bias, centroids, **values):
        return netvlad_reference(features, weight, bias, centroids, eps=float(values["eps"]),
                                 normalize_input=bool(values["normalize_input"]))

    _ortx = ortx
    return ortx


def ort_session(plugin_model):
    """An ONNX Runtime CPU session running ``plugin_model`` (a plugin graph, or its path)."""
    import onnx
    import onnxruntime as ort

    ortx = _register()
    if isinstance(plugin_model, (str, Path)):
        plugin_model = onnx.load(str(plugin_model))
    model = onnx.ModelProto()
    model.CopyFrom(plugin_model)
    inits = {t.name: t for t in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        if node.domain == PLUGIN_DOMAIN and node.op_type == PLUGIN_OP:
            check_node(node, inits)
            node.domain = ORTX_DOMAIN
            if inits[node.input[1]].data_type == onnx.TensorProto.FLOAT16:
                nodes.extend(_widened(node))
                continue
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    opsets = [o for o in model.opset_import if o.domain != PLUGIN_DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend([*opsets, onnx.helper.make_opsetid(ORTX_DOMAIN, 1)])
    options = ort.SessionOptions()
    options.register_custom_ops_library(ortx.get_library_path())
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def _widened(node) -> list:
    """Casts around an FP16 node: FP16 inputs -> FP32 -> the FP32 op -> FP16 output."""
    from onnx import TensorProto, helper

    casts = [helper.make_node("Cast", [name], [f"{name}__ortx_fp32"], to=TensorProto.FLOAT,
                              name=f"{name}__ortx_to_fp32") for name in node.input]
    out = node.output[0]
    for i, name in enumerate(list(node.input)):
        node.input[i] = f"{name}__ortx_fp32"
    node.output[0] = f"{out}__ortx_fp32"
    back = helper.make_node("Cast", [node.output[0]], [out], to=TensorProto.FLOAT16,
                            name=f"{out}__ortx_to_fp16")
    return [*casts, node, back]


def ort_runner(path: Path):
    """``images -> descriptors`` through :func:`ort_session` (for export validation)."""
    session = ort_session(path)
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})[0]
