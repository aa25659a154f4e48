"""The fused NetVLAD Triton kernel against the PyTorch NetVLAD layer, in Triton's interpreter.

``TRITON_INTERPRET=1`` must be set before triton is first imported, so the kernel runs in a
subprocess (interpreted_kernel.py) and these tests check what it reports. Tolerances: FP32
inputs max abs error <= 1e-5; FP16 inputs (FP16 output) max abs error <= 2e-3 and min cosine
>= 0.9999 against the FP32 layer on the same FP16-rounded inputs and weights.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="the kernel needs triton (vpr-edge[plugin])")
torch = pytest.importorskip("torch")

SCRIPT = Path(__file__).with_name("interpreted_kernel.py")
CASES = {
    # name: N, K, D, H, W, dtype (+ options); K, D and H*W off the block sizes on purpose
    "fp32-small-odd": dict(N=2, K=8, D=24, H=5, W=7, dtype="fp32"),
    "fp32-mid": dict(N=3, K=16, D=40, H=7, W=9, dtype="fp32"),
    "fp32-default-model": dict(N=2, K=64, D=112, H=15, W=20, dtype="fp32"),
    "fp32-one-position": dict(N=2, K=10, D=17, H=1, W=1, dtype="fp32"),
    "fp32-no-input-norm": dict(N=2, K=16, D=40, H=6, W=6, dtype="fp32",
                               normalize_input=False),
    "fp16-default-model": dict(N=2, K=64, D=112, H=15, W=20, dtype="fp16"),
    "fp16-60x80-large": dict(N=1, K=64, D=112, H=60, W=80, dtype="fp16", scale=300.0),
    "fp16-60x80-no-input-norm": dict(N=1, K=16, D=40, H=60, W=80, dtype="fp16", scale=30.0,
                                     normalize_input=False, centroid_scale=30.0),
}
TOLERANCE = {"fp32": {"max_abs_error": 1e-5, "min_cosine": 0.99999},
             "fp16": {"max_abs_error": 2e-3, "min_cosine": 0.9999}}


@pytest.fixture(scope="module")
def results() -> dict[str, dict]:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, str(SCRIPT)], input=json.dumps(list(CASES.values())),
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(zip(CASES, json.loads(done.stdout)))


@pytest.mark.parametrize("name", list(CASES))
def test_kernel_matches_the_layer(results, name: str) -> None:
    got, case = results[name], CASES[name]
    limits = TOLERANCE[case["dtype"]]
    assert got["shape"] == [case["N"], case["K"] * case["D"]]
    assert got["out_dtype"] == {"fp32": "torch.float32", "fp16": "torch.float16"}[case["dtype"]]
    assert got["finite"]
    assert got["max_abs_error"] <= limits["max_abs_error"], got
    assert got["min_cosine"] >= limits["min_cosine"], got
    assert all(abs(n - 1) < 2e-3 for n in got["norms"])


def test_fp16_stays_finite_where_a_naive_fp16_layer_overflows(results) -> None:
    got = results["fp16-60x80-large"]
    assert got["naive_fp16_finite"] is False, "the case must overflow a plain FP16 layer"
    assert got["finite"] and got["min_cosine"] >= 0.9999


def test_wrong_weight_shapes_are_refused_before_launch() -> None:
    from vpr_edge.export.plugin.kernel import fused_netvlad

    x = torch.zeros(1, 8, 2, 2)
    with pytest.raises(ValueError, match="do not fit"):
        fused_netvlad(x, torch.zeros(4, 7), torch.zeros(4), torch.zeros(4, 8))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_kernel_on_the_gpu_matches_the_layer(dtype: str) -> None:
    from vpr_edge.export.plugin.kernel import fused_netvlad
    from vpr_edge.training.netvlad import NetVLAD

    torch.manual_seed(0)
    layer = NetVLAD(64, 112).eval().cuda()
    x = torch.randn(8, 112, 30, 40, device="cuda").relu()
    half = dtype == "fp16"
    args = [t.detach() for t in (layer.assignment_weight, layer.assignment_bias,
                                 layer.centroids)]
    got = fused_netvlad(x.half() if half else x, *[a.half() if half else a for a in args],
                        eps=layer.eps).float()
    with torch.no_grad():
        expected = layer(x.half().float() if half else x)
    limits = TOLERANCE[dtype]
    assert (got - expected).abs().max() <= limits["max_abs_error"]
    assert torch.nn.functional.cosine_similarity(got, expected).min() >= limits["min_cosine"]
