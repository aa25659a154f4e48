"""FP32 ONNX -> strongly typed FP16 ONNX, by an explicit graph pass.

Why our own pass: TensorRT 11 removed the FP16 builder flag, so the precision must be in the
graph itself (a *strongly typed* network runs every tensor in the type the graph gives it).
The pass runs the backbone (convolutions, activations, residual adds) and the whitening
projection in FP16 with FP16 weights, and keeps everything that can overflow or cancel in FP16
in FP32: preprocessing, the whole NetVLAD layer (input normalisation, softmax, residual
aggregation, intra- and final normalisation) and every norm. Explicit ``Cast`` nodes sit at the
boundaries. Input (uint8) and output (float32) do not change.

Generic converters (onnxconverter-common's float16 with a block list) work on op types, not on
parts of the network; what must stay FP32 here is a region, so the pass selects nodes by the
module scope in their names (see :mod:`.onnx_fp32`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from vpr_edge._optional import require

from .onnx_fp32 import BACKBONE_SCOPE, WHITENING_SCOPE

#: ops that may run in FP16 inside the selected region (anything else stays FP32)
FP16_OPS = {"Conv", "Clip", "Relu", "Add", "Mul", "Sub", "Sigmoid", "HardSigmoid",
            "HardSwish", "MaxPool", "AveragePool", "GlobalAveragePool", "MatMul",
            "Concat", "Identity"}


def default_fp16_region(node) -> bool:
    """Backbone compute and the whitening projection run in FP16."""
    if node.op_type not in FP16_OPS:
        return False
    if node.name.startswith(BACKBONE_SCOPE):
        return True
    return node.name.startswith(WHITENING_SCOPE) and node.op_type == "MatMul"


def convert_to_fp16(model, in_fp16: Callable = default_fp16_region):
    """A copy of ``model`` whose selected nodes compute in FP16 (see module docstring)."""
    onnx = require("onnx", extra="export", purpose="FP16 conversion")
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.shape_inference.infer_shapes(model)
    graph = model.graph
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in [*graph.input, *graph.output, *graph.value_info]}
    inits = {t.name: t for t in graph.initializer}
    for name, tensor in inits.items():
        types[name] = tensor.data_type
    constants = {}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = node.attribute[0].t
            types[node.output[0]] = node.attribute[0].t.data_type
    producer = {out: node for node in graph.node for out in node.output}
    region = {id(node) for node in graph.node if in_fp16(node)}
    half_of: dict[str, str] = {}
    new_inits, new_nodes_before = [], {}

    def half_value(name: str) -> str:
        if name in half_of:
            return half_of[name]
        source = inits.get(name) or constants.get(name)
        half = f"{name}__fp16"
        if source is not None:
            array = numpy_helper.to_array(source).astype(np.float16)
            new_inits.append(numpy_helper.from_array(array, half))
        else:
            cast = helper.make_node("Cast", [name], [half], to=TensorProto.FLOAT16,
                                    name=f"{name}__to_fp16")
            new_nodes_before[half] = [cast]
        half_of[name] = half
        return half

    float_out: dict[str, str] = {}
    rewritten = []
    for node in graph.node:
        if id(node) in region:
            for i, name in enumerate(node.input):
                if name and types.get(name) == TensorProto.FLOAT:
                    made_here = name in producer and id(producer[name]) in region
                    if not made_here:
                        node.input[i] = half_value(name)
            for out in node.output:
                if types.get(out) == TensorProto.FLOAT:
                    float_out[out] = f"{out}__fp32"
        rewritten.append(node)
    # consumers outside the region (and graph outputs) read the region's FP16 tensors via Casts
    casts_back = {}
    for node in rewritten:
        if id(node) in region:
            continue
        for i, name in enumerate(node.input):
            if name in float_out:
                node.input[i] = float_out[name]
                casts_back[name] = helper.make_node(
                    "Cast", [name], [float_out[name]], to=TensorProto.FLOAT,
                    name=f"{name}__to_fp32")
    for output in graph.output:
        if output.name in float_out:
            raise ValueError("the FP16 region may not produce a graph output directly")
    ordered = []
    for node in rewritten:
        for inp in node.input:
            ordered.extend(new_nodes_before.pop(inp, []))
        ordered.append(node)
        for out in node.output:
            if out in casts_back:
                ordered.append(casts_back.pop(out))
    used = {name for node in ordered for name in node.input}
    del graph.node[:]
    graph.node.extend(n for n in ordered if n.op_type != "Constant" or n.output[0] in used)
    graph.initializer.extend(new_inits)
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.value_info[:]
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model)
    return model


def fp16_fraction(model) -> float:
    """Share of Conv/MatMul nodes whose weights are FP16 (a quick check of the pass)."""
    from onnx import TensorProto

    inits = {t.name: t.data_type for t in model.graph.initializer}
    heavy = [n for n in model.graph.node if n.op_type in ("Conv", "MatMul")]
    half = [n for n in heavy if any(inits.get(i) == TensorProto.FLOAT16 for i in n.input)]
    return len(half) / max(1, len(heavy))
