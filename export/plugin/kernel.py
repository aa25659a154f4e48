"""The fused NetVLAD kernel, in Triton: one program per image does the whole layer.

For image ``n`` with local features ``x[n]`` (``[D, HW]``, FP16 or FP32), assignment weight
``W`` ``[K, D]``, bias ``b`` ``[K]`` and centroids ``C`` ``[K, D]``::

    x_i   <- x_i / max(||x_i||, eps)                 (when NORMALIZE_INPUT)
    a     = softmax_K(W x + b)                       [K, HW]
    V     = a x^T - (sum_i a_i) C                    [K, D]
    V[k] <- V[k] / max(||V[k]||, eps)                (intra-normalisation)
    out   = flatten(V) / max(||V||, eps)             [K*D], row k = cluster k

Every product and sum is in FP32 (FP16 inputs are widened on load), so activations far beyond
FP16's comfort (norms of thousands, 60x80 maps) cannot overflow; only the result, whose
entries are at most 1, is narrowed when the output is FP16. The HW positions are processed
in blocks of ``BLOCK_HW``; ``K`` and ``D`` are padded to powers of two (>= 16) and masked.

The argument order is TensorRT's for AOT plugins: inputs, then extra scalars, then outputs.
Run on the CPU with ``TRITON_INTERPRET=1`` (set before this module is imported).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def netvlad_kernel(x_ptr, w_ptr, b_ptr, c_ptr, hw, out_ptr,
                   K: tl.constexpr, D: tl.constexpr, K_PAD: tl.constexpr,
                   D_PAD: tl.constexpr, BLOCK_HW: tl.constexpr, EPS: tl.constexpr,
                   NORMALIZE_INPUT: tl.constexpr):
    n = tl.program_id(0)
    ks = tl.arange(0, K_PAD)
    ds = tl.arange(0, D_PAD)
    k_ok = ks < K
    d_ok = ds < D
    kd_ok = k_ok[:, None] & d_ok[None, :]
    w = tl.load(w_ptr + ks[:, None] * D + ds[None, :], mask=kd_ok, other=0.0).to(tl.float32)
    bias = tl.load(b_ptr + ks, mask=k_ok, other=0.0).to(tl.float32)
    acc = tl.zeros((K_PAD, D_PAD), dtype=tl.float32)  # sum_i a_ki x_i
    mass = tl.zeros((K_PAD,), dtype=tl.float32)  # sum_i a_ki
    base = x_ptr + n.to(tl.int64) * D * hw
    for start in range(0, hw, BLOCK_HW):
        ps = start + tl.arange(0, BLOCK_HW)
        p_ok = ps < hw
        x = tl.load(base + ds[:, None] * hw + ps[None, :],
                    mask=d_ok[:, None] & p_ok[None, :], other=0.0).to(tl.float32)  # [D, P]
        if NORMALIZE_INPUT:
            norm = tl.sqrt(tl.sum(x * x, axis=0))
            x = x / tl.maximum(norm, EPS)[None, :]
        logits = tl.dot(w, x, input_precision="ieee") + bias[:, None]  # [K, P]
        logits = tl.where(k_ok[:, None], logits, float("-inf"))
        top = tl.max(logits, axis=0)
        e = tl.exp(logits - top[None, :])
        a = e / tl.sum(e, axis=0)[None, :]
        a = tl.where(p_ok[None, :], a, 0.0)
        acc += tl.dot(a, tl.trans(x), input_precision="ieee")
        mass += tl.sum(a, axis=1)
    c = tl.load(c_ptr + ks[:, None] * D + ds[None, :], mask=kd_ok, other=0.0).to(tl.float32)
    v = acc - mass[:, None] * c
    row = tl.sqrt(tl.sum(v * v, axis=1))
    v = v / tl.maximum(row, EPS)[:, None]
    total = tl.sqrt(tl.sum(tl.sum(v * v, axis=1), axis=0))
    v = v / tl.maximum(total, EPS)
    out = out_ptr + n.to(tl.int64) * K * D + ks[:, None] * D + ds[None, :]
    tl.store(out, v.to(out_ptr.dtype.element_ty), mask=kd_ok)


def padded(size: int) -> int:
    """The power of two >= max(size, 16) that tl.dot needs."""
    return max(16, triton.next_power_of_2(size))


BLOCK_HW = 16  # keeps shared memory under 48 KB (44 KB at K=64, D=112), the no-opt-in limit


def fused_netvlad(features, weight, bias, centroids, *, eps: float = 1e-12,
                  normalize_input: bool = True, out_dtype=None):
    """Run the kernel on torch tensors (a GPU, or the CPU under ``TRITON_INTERPRET=1``).

    ``features`` ``[N, D, H, W]`` (contiguous, FP16/FP32), ``weight`` ``[K, D]``, ``bias``
    ``[K]``, ``centroids`` ``[K, D]``; returns ``[N, K*D]`` in ``out_dtype`` (default: the
    features' dtype).
    """
    import torch

    n, d, h, w = features.shape
    k = weight.shape[0]
    if weight.shape != (k, d) or bias.shape != (k,) or centroids.shape != (k, d):
        raise ValueError(f"NetVLAD plugin: weight {tuple(weight.shape)}, bias "
                         f"{tuple(bias.shape)}, centroids {tuple(centroids.shape)} do not fit "
                         f"features with D={d} and K={k}")
    out = torch.empty((n, k * d), dtype=out_dtype or features.dtype, device=features.device)
    netvlad_kernel[(n,)](features.contiguous(), weight.contiguous(), bias.contiguous(),
                         centroids.contiguous(), h * w, out, K=k, D=d, K_PAD=padded(k),
                         D_PAD=padded(d), BLOCK_HW=BLOCK_HW, EPS=eps,
                         NORMALIZE_INPUT=normalize_input)
    return out
