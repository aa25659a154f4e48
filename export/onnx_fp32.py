"""PyTorch -> FP32 ONNX: ``image`` uint8 [N, H, W, 3] in, ``descriptor`` float32 [N, dim] out.

The model is wrapped in :class:`~vpr_edge.training.model.ImageInput`, so casting, scaling,
normalisation and the NHWC -> NCHW transpose happen inside the graph. We use PyTorch's
TorchScript-based exporter (``dynamo=False``): it needs no extra package (the dynamo exporter
needs onnxscript), gives a clean opset-17 graph with a dynamic batch and static H/W, and keeps
module scopes in node names (``/model/backbone/...``, ``/model/aggregation/...``), which the
FP16 pass and the plugin use to find the parts of the network.
"""

from __future__ import annotations

import io
import warnings

import torch

from vpr_edge._optional import require

INPUT_NAME = "image"
OUTPUT_NAME = "descriptor"
#: node-name prefixes of the network's parts in the exported graph
BACKBONE_SCOPE = "/model/backbone/"
AGGREGATION_SCOPE = "/model/aggregation/"
WHITENING_SCOPE = "/model/whitening/"


def export_fp32(model: torch.nn.Module, height: int, width: int, *, opset: int = 17):
    """Trace ``model`` (a VPRModel) to an in-memory ``onnx.ModelProto``."""
    onnx = require("onnx", extra="export", purpose="ONNX export")
    from vpr_edge.training.model import ImageInput

    wrapped = ImageInput(model, model.config.preprocess).eval()
    example = torch.zeros(1, height, width, 3, dtype=torch.uint8)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python-side shape checks
        torch.onnx.export(
            wrapped, (example,), buffer, dynamo=False, opset_version=opset,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            do_constant_folding=True,
        )
    return onnx.load_from_string(buffer.getvalue())
