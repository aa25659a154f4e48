from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vpr_edge.errors import InvalidInputError
from vpr_edge.training.netvlad import NetVLAD, kmeans, paper_alpha


def numpy_netvlad(x, weight, bias, centroids, normalize_input=True, eps=1e-12):
    """Straightforward loops over samples, positions, clusters, channels; no shared code."""
    n, d, h, w = x.shape
    k = centroids.shape[0]
    out = np.zeros((n, k * d))
    for s in range(n):
        vlad = np.zeros((k, d))
        for i in range(h):
            for j in range(w):
                desc = x[s, :, i, j].astype(np.float64)
                if normalize_input:
                    desc = desc / max(math.sqrt(sum(v * v for v in desc)), eps)
                logits = [sum(weight[c, ch] * desc[ch] for ch in range(d)) + bias[c]
                          for c in range(k)]
                top = max(logits)
                exps = [math.exp(v - top) for v in logits]
                total = sum(exps)
                for c in range(k):
                    a = exps[c] / total
                    for ch in range(d):
                        vlad[c, ch] += a * (desc[ch] - centroids[c, ch])
        for c in range(k):
            norm = math.sqrt(sum(v * v for v in vlad[c]))
            vlad[c] /= max(norm, eps)
        flat = vlad.reshape(-1)
        out[s] = flat / max(math.sqrt(sum(v * v for v in flat)), eps)
    return out


@pytest.mark.parametrize("n,k,d,h,w,normalize", [
    (2, 4, 8, 3, 5, True), (1, 1, 3, 2, 2, True), (3, 5, 7, 4, 1, False), (1, 8, 6, 2, 3, True),
])
def test_forward_matches_independent_numpy_loops(n, k, d, h, w, normalize) -> None:
    torch.manual_seed(k * 100 + d)
    layer = NetVLAD(k, d, normalize_input=normalize).double()
    with torch.no_grad():
        layer.conv.bias.normal_()
    x = torch.randn(n, d, h, w, dtype=torch.float64) * 3
    expected = numpy_netvlad(x.numpy(), layer.conv.weight.detach().numpy()[:, :, 0, 0],
                             layer.conv.bias.detach().numpy(),
                             layer.centroids.detach().numpy(), normalize)
    got = layer(x).detach().numpy()
    assert got.shape == (n, k * d)
    np.testing.assert_allclose(got, expected, atol=1e-10)


def test_layout_is_k_by_d() -> None:
    torch.manual_seed(0)
    layer = NetVLAD(3, 4)
    x = torch.randn(1, 4, 2, 2)
    out = layer(x)
    # row k of the K x D matrix (before the final L2) is cluster k's intra-normalised residual
    v = out.reshape(3, 4)
    np.testing.assert_allclose(v.norm(dim=1).detach().numpy(), [1 / math.sqrt(3)] * 3, atol=1e-6)


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(1)
    layer = NetVLAD(4, 6)
    x = torch.randn(2, 6, 3, 3, requires_grad=True)
    (layer(x) * torch.randn(2, 24)).sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


def hard_vlad(x, centroids):
    """VLAD with hard assignment to the nearest centroid (numpy)."""
    n, d, h, w = x.shape
    desc = x.reshape(n, d, h * w).transpose(0, 2, 1)
    desc = desc / np.linalg.norm(desc, axis=2, keepdims=True)
    out = []
    for sample in desc:
        nearest = ((sample[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
        vlad = np.zeros_like(centroids)
        for i, c in enumerate(nearest):
            vlad[c] += sample[i] - centroids[c]
        norms = np.linalg.norm(vlad, axis=1, keepdims=True)
        vlad = np.divide(vlad, norms, out=np.zeros_like(vlad), where=norms > 0)
        flat = vlad.reshape(-1)
        out.append(flat / np.linalg.norm(flat))
    return np.stack(out)


def test_large_alpha_approaches_hard_assignment_vlad() -> None:
    rng = np.random.default_rng(0)
    k, d = 5, 8
    centroids = rng.standard_normal((k, d))
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    x = rng.standard_normal((2, d, 8, 8))
    hard = hard_vlad(x, centroids)
    # every cluster gets descriptors (an empty cluster is a zero row in hard VLAD but a unit
    # row after intra-normalising a tiny soft residual)
    assert (np.abs(hard.reshape(2, k, d)).sum(axis=2) > 0).all()
    layer = NetVLAD(k, d).double()
    errors = []
    for alpha in (1.0, 10.0, 100.0, 1000.0, 10000.0):
        with torch.no_grad():
            c = torch.from_numpy(centroids)
            layer.centroids.copy_(c)
            layer.conv.weight.copy_((2 * alpha * c).reshape(k, d, 1, 1))
            layer.conv.bias.copy_(-alpha * (c * c).sum(1))
        errors.append(np.abs(layer(torch.from_numpy(x)).detach().numpy() - hard).max())
    assert errors[0] > 0.1 and errors[-1] < 1e-6, errors
    assert errors[-1] < errors[-2] < errors[0], errors


def test_kmeans_recovers_separated_clusters_deterministically() -> None:
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((6, 4)) * 10
    data = np.concatenate([c + rng.standard_normal((200, 4)) * 0.1 for c in centres])
    found = kmeans(data, 6, seed=1).numpy()
    assert np.allclose(found, kmeans(data, 6, seed=1).numpy())
    dist = np.linalg.norm(found[:, None] - centres[None], axis=2)
    assert sorted(dist.argmin(1).tolist()) == list(range(6))
    assert dist.min(1).max() < 0.05
    with pytest.raises(InvalidInputError, match="at least k"):
        kmeans(data[:3], 6)


def test_paper_alpha_on_a_hand_made_example() -> None:
    # centroids at 0 and 10 on a line; descriptors at 1 and 9: d2 = (1, 81) for both,
    # gap 80, alpha = -ln(0.01) / 80 = 0.0575646...
    c = torch.tensor([[0.0], [10.0]])
    x = torch.tensor([[1.0], [9.0]])
    assert paper_alpha(c, x) == pytest.approx(-math.log(0.01) / 80)


def test_init_from_clusters_makes_nearest_centroid_dominate() -> None:
    rng = np.random.default_rng(4)
    layer = NetVLAD(4, 3, normalize_input=False)
    c = torch.tensor(rng.standard_normal((4, 3)), dtype=torch.float32)
    x = torch.tensor(rng.standard_normal((500, 3)), dtype=torch.float32)
    alpha = layer.init_from_clusters(c, x)
    assert alpha > 0
    a = layer.soft_assignment(x.T.reshape(1, 3, 500, 1))[0]  # [K, 500]
    nearest = torch.cdist(x, c).argmin(1)
    assert (a.argmax(0) == nearest).all()
    with pytest.raises(InvalidInputError, match="centroids"):
        layer.init_from_clusters(c[:2], x)


def test_wrong_feature_shape_is_refused() -> None:
    with pytest.raises(InvalidInputError, match=r"\[N, 6, H, W\]"):
        NetVLAD(4, 6)(torch.zeros(1, 5, 2, 2))
