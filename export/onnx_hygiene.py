"""Graph hygiene: simplification, checks, op coverage, and the metadata blob.

- ``onnxslim`` folds constants and removes shape plumbing (152 -> 90 nodes for the default
  model); the result is validated numerically like every exported file.
- ``onnx.checker`` and strict shape inference must pass; the input must have static H/W and
  the output the model's dimension, with only the batch dynamic.
- Every op must be one TensorRT 10.3's ONNX parser (JetPack 6) supports: the list below is the
  subset of its operator table we allow; a new op in the graph fails the export (and a test).
- Every file is saved with its checksum inside (:func:`save_sealed`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from vpr_edge._optional import require
from vpr_edge.errors import ModelFormatError
from vpr_edge.metadata import ONNX_METADATA_KEY, ModelMetadata
from vpr_edge.model_checksum import CHECKSUM_KEY, PLACEHOLDER, seal_onnx_file

from .onnx_fp32 import INPUT_NAME, OUTPUT_NAME

#: ONNX ops our graphs may use; all are in TensorRT 10.3's onnx-tensorrt operator support
#: table (docs/operators.md of onnx-tensorrt release 10.3), in FP32 and FP16.
TENSORRT_10_3_OPS = frozenset({
    "Add", "AveragePool", "Cast", "Clip", "Concat", "Constant", "Conv", "Div", "Expand",
    "Flatten", "Gather", "GlobalAveragePool", "HardSigmoid", "HardSwish", "Identity",
    "MatMul", "Max", "MaxPool", "Mul", "Pow", "ReduceL2", "ReduceMean", "ReduceSum", "Relu",
    "Reshape", "Shape", "Sigmoid", "Slice", "Softmax", "Sqrt", "Sub", "Transpose", "Unsqueeze",
})


def simplify(model):
    """onnxslim's simplification (constant folding, dead code, shape plumbing)."""
    onnxslim = require("onnxslim", extra="export", purpose="ONNX simplification")
    return onnxslim.slim(model)


def op_counts(model) -> Counter:
    return Counter(node.op_type for node in model.graph.node)


def check_graph(model, *, height: int, width: int, dim: int,
                extra_ops: frozenset[str] = frozenset()) -> None:
    """Checker, strict shape inference, static H/W, output dim, and the op list."""
    onnx = require("onnx", extra="export", purpose="ONNX checks")
    try:
        onnx.checker.check_model(model)
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as exc:  # onnx raises several checker/inference error types
        raise ModelFormatError(f"exported graph fails the ONNX checker: {exc}") from exc

    def dims(value_info) -> list:
        return [d.dim_value if d.HasField("dim_value") else d.dim_param
                for d in value_info.type.tensor_type.shape.dim]

    inputs = {i.name: i for i in inferred.graph.input}
    outputs = {o.name: o for o in inferred.graph.output}
    if set(inputs) != {INPUT_NAME} or set(outputs) != {OUTPUT_NAME}:
        raise ModelFormatError(f"graph must have input '{INPUT_NAME}' and output "
                               f"'{OUTPUT_NAME}', got {list(inputs)} -> {list(outputs)}")
    in_dims, out_dims = dims(inputs[INPUT_NAME]), dims(outputs[OUTPUT_NAME])
    if in_dims[1:] != [height, width, 3] or isinstance(in_dims[0], int):
        raise ModelFormatError(f"input shape {in_dims} is not [batch, {height}, {width}, 3]")
    if out_dims[1:] != [dim] or isinstance(out_dims[0], int):
        raise ModelFormatError(f"output shape {out_dims} is not [batch, {dim}]")
    unknown = set(op_counts(model)) - TENSORRT_10_3_OPS - extra_ops
    if unknown:
        raise ModelFormatError(
            f"graph uses ops outside the TensorRT 10.3 parser's set: {sorted(unknown)}"
        )


def set_metadata(model, metadata: ModelMetadata) -> None:
    """Write the metadata JSON into ``metadata_props`` (key ``vpr_edge``), replacing any, and
    the file checksum's placeholder entry, last (:func:`save_sealed` fills it in)."""
    kept = [p for p in model.metadata_props if p.key not in (ONNX_METADATA_KEY, CHECKSUM_KEY)]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key = ONNX_METADATA_KEY
    entry.value = metadata.to_json()
    checksum = model.metadata_props.add()
    checksum.key = CHECKSUM_KEY
    checksum.value = PLACEHOLDER.decode("ascii")
    model.producer_name = "vpr-edge"
    model.producer_version = metadata.package_version


def save_sealed(model, path: Path) -> None:
    """``onnx.save``, then the file's checksum written into it
    (:mod:`vpr_edge.model_checksum`: the runtime refuses the file if its bytes change)."""
    import onnx

    onnx.save(model, str(path))
    seal_onnx_file(path)
