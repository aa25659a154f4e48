"""Runs the NetVLAD Triton kernel in Triton's interpreter and compares it with the layer.

Used by test_kernel.py in a subprocess, because ``TRITON_INTERPRET=1`` must be set before
triton is first imported. Reads a JSON list of cases on stdin, prints a JSON list of results.
"""

from __future__ import annotations

import json
import os
import sys

assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"

import numpy as np
import torch

from vpr_edge.export.plugin.kernel import fused_netvlad
from vpr_edge.export.plugin.ort_custom_op import netvlad_reference
from vpr_edge.training.netvlad import NetVLAD


def run_case(case: dict) -> dict:
    torch.manual_seed(case.get("seed", 0))
    n, k, d, h, w = (case[key] for key in "NKDHW")
    dtype = {"fp32": torch.float32, "fp16": torch.float16}[case["dtype"]]
    layer = NetVLAD(k, d, normalize_input=case.get("normalize_input", True)).eval()
    with torch.no_grad():
        layer.centroids.mul_(case.get("centroid_scale", 1.0))
    x = (torch.randn(n, d, h, w) * case.get("scale", 1.0)).relu().to(dtype)
    weight, bias, centroids = (t.detach().to(dtype) for t in (
        layer.assignment_weight, layer.assignment_bias, layer.centroids))
    got = fused_netvlad(x, weight, bias, centroids, eps=layer.eps,
                        normalize_input=layer.normalize_input).float()
    with torch.no_grad():  # the layer in FP32 on the same (rounded) inputs and weights
        layer.conv.weight.copy_(weight.float()[:, :, None, None])
        layer.conv.bias.copy_(bias.float())
        layer.centroids.copy_(centroids.float())
        expected = layer(x.float())
    naive = None
    if dtype == torch.float16:  # the layer with every operation in FP16
        with np.errstate(all="ignore"):
            naive = torch.from_numpy(netvlad_reference(
                *(t.numpy() for t in (x, weight, bias, centroids)), eps=layer.eps,
                normalize_input=layer.normalize_input, compute=np.float16)).float()
    cosine = torch.nn.functional.cosine_similarity(got, expected, dim=1)
    return {"case": case, "out_dtype": str(fused_netvlad(x[:1], weight, bias, centroids).dtype)
            if n else None, "shape": list(got.shape),
            "finite": bool(torch.isfinite(got).all()),
            "max_abs_error": float((got - expected).abs().max()),
            "min_cosine": float(cosine.min()),
            "norms": [float(v) for v in got.norm(dim=1)],
            "naive_fp16_finite": None if naive is None else bool(torch.isfinite(naive).all()),
            "naive_fp16_min_cosine": None if naive is None else float(
                torch.nan_to_num(torch.nn.functional.cosine_similarity(
                    naive, expected, dim=1), nan=-1.0).min())}


if __name__ == "__main__":
    print(json.dumps([run_case(case) for case in json.load(sys.stdin)]))
