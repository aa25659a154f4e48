"""The plugin graph: the exported NetVLAD subgraph replaced by one ``vpr_edge::NetVLAD`` node.

The node contract (what TensorRT's plugin and the ONNX Runtime custom op both implement):

- inputs: ``features`` ``[N, D, H, W]``, ``weight`` ``[K, D]``, ``bias`` ``[K]``,
  ``centroids`` ``[K, D]``, all of one type, float32 or float16 (the weights are
  initializers);
- attributes: ``num_clusters`` (int, K), ``dim`` (int, D), ``eps`` (float),
  ``normalize_input`` (int 0/1);
- output: ``[N, K*D]`` descriptors of the inputs' type, L2-normalised, row k = cluster k.

The plugin's version is not a node attribute (TensorRT hands every attribute to the plugin
creator); the model metadata records ``vpr_edge::NetVLAD`` and :data:`PLUGIN_VERSION`.
TensorRT's ONNX parser takes the plugin namespace from the node's domain (``vpr_edge``) and
the plugin name from its op type (``NetVLAD``). The subgraph is found by the module scope the
exporter keeps in node names (``/model/aggregation/``).

In an FP16 graph (from :func:`vpr_edge.export.onnx_fp16.convert_to_fp16`) the node takes the
backbone's FP16 features directly, with FP16 weights, and a Cast returns its FP16 output to
FP32 for what follows (whitening, the ``descriptor`` output).
"""

from __future__ import annotations

import numpy as np

PLUGIN_DOMAIN = "vpr_edge"
PLUGIN_OP = "NetVLAD"
PLUGIN_ID = f"{PLUGIN_DOMAIN}::{PLUGIN_OP}"
PLUGIN_VERSION = "1"
AGGREGATION_SCOPE = "/model/aggregation/"
NODE_NAME = "/model/aggregation/NetVLAD_plugin"


def replace_netvlad(model, weight: np.ndarray, bias: np.ndarray, centroids: np.ndarray, *,
                    eps: float, normalize_input: bool, dtype=np.float32):
    """A copy of ``model`` (an ``onnx.ModelProto`` from the exporter, FP32 or FP16) with the
    NetVLAD subgraph replaced by the plugin node computing in ``dtype`` (float32/float16)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float16):
        raise ValueError(f"the NetVLAD plugin computes in float32 or float16, not {dtype}")
    weight, bias, centroids = (np.asarray(t, np.float32) for t in (weight, bias, centroids))
    k, d = weight.shape
    if bias.shape != (k,) or centroids.shape != (k, d):
        raise ValueError(f"NetVLAD weights do not fit: weight {weight.shape}, bias "
                         f"{bias.shape}, centroids {centroids.shape}")
    if plugin_nodes(model):
        raise ValueError("the graph already has a vpr_edge::NetVLAD node; start from the "
                         "plain graph (NAME.onnx or NAME.fp16.onnx)")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    scoped = [n for n in graph.node if n.name.startswith(AGGREGATION_SCOPE)]
    if not scoped:
        raise ValueError(f"no nodes under {AGGREGATION_SCOPE} in the graph: not a NetVLAD model "
                         "exported by vpr-export")
    produced = {o for n in scoped for o in n.output}
    constants = {i.name for i in graph.initializer}
    entering = {i for n in scoped for i in n.input if i and i not in produced
                and i not in constants}
    others = [n for n in graph.node if not n.name.startswith(AGGREGATION_SCOPE)]
    outputs = {g.name for g in graph.output}
    leaving = {o for o in produced if o in outputs or any(o in n.input for n in others)}
    if len(entering) != 1 or len(leaving) != 1:
        raise ValueError(f"the NetVLAD subgraph should have one input and one output, found "
                         f"{sorted(entering)} -> {sorted(leaving)}")
    features, result = entering.pop(), leaving.pop()
    onnx_type = TensorProto.FLOAT16 if dtype == np.float16 else TensorProto.FLOAT
    before, after = [], []
    if dtype == np.float16:
        source = _fp16_source(graph, features)
        if source is None:  # FP32 features: narrow them for the node
            source = f"{features}__netvlad_fp16"
            before.append(helper.make_node("Cast", [features], [source], to=onnx_type,
                                           name=f"{NODE_NAME}/features_to_fp16"))
        features = source
        node_out = f"{result}__fp16"
        after.append(helper.make_node("Cast", [node_out], [result], to=TensorProto.FLOAT,
                                      name=f"{NODE_NAME}/output_to_fp32"))
    else:
        node_out = result
    names = ("netvlad.weight", "netvlad.bias", "netvlad.centroids")
    for name, value in zip(names, (weight, bias, centroids)):
        graph.initializer.append(numpy_helper.from_array(value.astype(dtype), name))
    # plugin_namespace: where TensorRT's ONNX parser looks the plugin up (onnx-tensorrt
    # reads this attribute; only newer parsers fall back to the node's domain)
    node = helper.make_node(PLUGIN_OP, [features, *names], [node_out], name=NODE_NAME,
                            domain=PLUGIN_DOMAIN, num_clusters=int(k), dim=int(d),
                            eps=float(eps), normalize_input=int(bool(normalize_input)),
                            plugin_namespace=PLUGIN_DOMAIN)
    first = list(graph.node).index(scoped[0])
    kept = [n for n in graph.node if not n.name.startswith(AGGREGATION_SCOPE)]
    kept[first:first] = [*before, node, *after]
    del graph.node[:]
    graph.node.extend(_without_dead_nodes(kept, outputs))
    used = {i for n in graph.node for i in n.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    del graph.value_info[:]  # stale shapes of the removed subgraph
    if not any(o.domain == PLUGIN_DOMAIN for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid(PLUGIN_DOMAIN, 1))
    return out


def kernel_size_problem(num_clusters: int, dim: int) -> str | None:
    """Why the GPU kernel cannot take K x D (None when it can).

    The kernel pads K and D to powers of two (>= 16) and must stay within 48 KB of shared
    memory (AOT plugins cannot opt in to more): measured 44 KB at 64 x 128 and at 128 x 64,
    50 KB at 32 x 256. So: padded D <= 128 and padded K x padded D <= 8192.
    """
    k_pad, d_pad = (max(16, 1 << (max(1, v) - 1).bit_length()) for v in (num_clusters, dim))
    if d_pad <= 128 and k_pad * d_pad <= 8192:
        return None
    return (f"the fused NetVLAD kernel supports D <= 128 and K x D <= 64 x 128 (padded to "
            f"powers of two); this layer has K={num_clusters}, D={dim}: export without "
            "--plugin (the plain graph runs it)")


def _fp16_source(graph, name: str) -> str | None:
    """If ``name`` is made by the FP16 pass's boundary Cast (``X__to_fp32``: FP16 ``X`` to
    FP32), then ``X``."""
    from onnx import TensorProto

    for node in graph.node:
        if node.op_type == "Cast" and node.output[0] == name:
            to = next((a.i for a in node.attribute if a.name == "to"), None)
            if to == TensorProto.FLOAT and node.name.endswith("__to_fp32"):
                return node.input[0]
    return None


def _without_dead_nodes(nodes: list, outputs: set[str]) -> list:
    """Drop nodes none of whose outputs is used (e.g. a Cast the plugin bypasses)."""
    nodes = list(nodes)
    while True:
        used = {i for n in nodes for i in n.input} | outputs
        alive = [n for n in nodes if any(o in used for o in n.output)]
        if len(alive) == len(nodes):
            return alive
        nodes = alive


def plugin_nodes(model) -> list:
    """The ``vpr_edge::NetVLAD`` nodes of ``model``."""
    return [n for n in model.graph.node if n.domain == PLUGIN_DOMAIN and n.op_type == PLUGIN_OP]
