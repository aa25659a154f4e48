"""Does the exported file compute what the checkpoint computes? Checked on real images.

Every file this machine can execute runs on the validation images next to PyTorch: per-output
max/median absolute error, min/mean cosine of descriptors, and retrieval agreement (does each
image's nearest other image stay the same). PASSED/FAILED against thresholds, with the
tolerance that would have passed, in the style of Polygraphy's comparator.

Who executes the FP16 graph here: ONNX Runtime's CPU provider runs it, but it has no FP16
kernels for most ops and wraps them in Casts, so every tensor is rounded to FP16 exactly as
the graph says while arithmetic inside an op is FP32 (TensorRT also accumulates FP16
convolutions in FP32). ``onnx.reference`` (numpy, FP16 arithmetic) re-runs a few images as an
independent cross-check. Neither is TensorRT: the report says which ran.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vpr_edge.errors import InvalidInputError
from vpr_edge.images import load_image, resize

THRESHOLDS = {"fp32": {"min_cosine": 0.9999, "top1_agreement": 0.0},
              "fp16": {"min_cosine": 0.999, "top1_agreement": 0.99}}


@dataclass(frozen=True)
class Comparison:
    """How one exported file agrees with PyTorch."""

    file: str
    precision: str
    runtime: str
    images: int
    max_abs_error: float
    median_abs_error: float
    min_cosine: float
    mean_cosine: float
    top1_agreement: float
    top5_overlap: float
    passed: bool
    threshold_min_cosine: float
    threshold_top1_agreement: float

    def to_dict(self) -> dict:
        return asdict(self)

    def report(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        return (
            f"{verdict}  {self.file} ({self.precision}, run by {self.runtime}, "
            f"{self.images} images)\n"
            f"    abs error: max {self.max_abs_error:.3g}, median {self.median_abs_error:.3g}\n"
            f"    cosine: min {self.min_cosine:.6f}, mean {self.mean_cosine:.6f} "
            f"(threshold {self.threshold_min_cosine}; would pass at >= "
            f"{np.floor(self.min_cosine * 1e6) / 1e6:.6f})\n"
            f"    top-1 retrieval agreement {self.top1_agreement:.1%} ("
            + (f"threshold {self.threshold_top1_agreement:.0%}" if self.threshold_top1_agreement
               else "no threshold at this precision")
            + f"), top-5 overlap {self.top5_overlap:.1%}"
        )


def load_validation_images(folder: Path, height: int, width: int, limit: int = 64
                           ) -> np.ndarray:
    """Up to ``limit`` images of ``folder`` (evenly spaced), resized: ``uint8 [N, H, W, 3]``.

    An undecodable image is an error naming it (validation on fewer images than asked would
    be a silent weakening).
    """
    from vpr_edge.sources import list_images, not_a_folder

    if not folder.is_dir():
        raise InvalidInputError(f"--validate: {not_a_folder(folder)}")
    files = list_images(folder)
    if len(files) < 2:
        raise InvalidInputError(f"--validate {folder}: needs at least 2 images, found "
                                f"{len(files)}")
    if len(files) > limit:
        files = [files[i] for i in np.linspace(0, len(files) - 1, limit).round().astype(int)]
    return np.stack([resize(load_image(p), height, width) for p in files])


def _neighbours(descriptors: np.ndarray, k: int) -> np.ndarray:
    sims = descriptors @ descriptors.T
    np.fill_diagonal(sims, -np.inf)
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def compare(reference: np.ndarray, candidate: np.ndarray, *, file: str, precision: str,
            runtime: str) -> Comparison:
    """Compare descriptors of the same images (rows) from PyTorch and an exported file."""
    ref = np.asarray(reference, np.float64)
    got = np.asarray(candidate, np.float64)
    if ref.shape != got.shape:
        raise InvalidInputError(f"{file}: output shape {got.shape} != PyTorch's {ref.shape}")
    if not np.isfinite(got).all():
        cos = np.full(len(ref), -1.0)
    else:
        cos = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    err = np.abs(ref - got)
    k = min(5, len(ref) - 1)
    top_ref, top_got = _neighbours(ref, k), _neighbours(np.nan_to_num(got), k)
    agree = float((top_ref[:, 0] == top_got[:, 0]).mean())
    overlap = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(top_ref, top_got)]))
    limits = THRESHOLDS[precision]
    passed = bool(cos.min() >= limits["min_cosine"] and agree >= limits["top1_agreement"])
    return Comparison(file, precision, runtime, len(ref), float(np.nanmax(err)),
                      float(np.nanmedian(err)), float(cos.min()), float(cos.mean()), agree,
                      overlap, passed, limits["min_cosine"], limits["top1_agreement"])


def run_in_batches(run: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
                   batch: int = 8) -> np.ndarray:
    return np.concatenate([run(images[i:i + batch]) for i in range(0, len(images), batch)])


def onnxruntime_runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    from vpr_edge.backends.onnxruntime_backend import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(path, target="cpu")
    return backend.run


def reference_runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """onnx.reference.ReferenceEvaluator: numpy, in the graph's own dtypes (slow)."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(onnx.load(str(path)))
    return lambda batch: np.concatenate(
        [evaluator.run(None, {"image": batch[i:i + 1]})[0] for i in range(len(batch))])


def plugin_graph_runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """A plugin graph (``vpr_edge::NetVLAD`` node) through the ONNX Runtime custom op."""
    from .plugin.ort_custom_op import ort_runner

    return ort_runner(path)


RUNNERS = {  # how a file is executed here, and what the report calls it
    "plain": (onnxruntime_runner, "onnxruntime CPU"),
    "plugin": (plugin_graph_runner,
               "onnxruntime CPU + vpr_edge::NetVLAD custom op (numpy, FP32 math)"),
}


def validate_files(torch_describe: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
                   files: Sequence[tuple[Path, str, str]], *, reference_images: int = 2
                   ) -> list[Comparison]:
    """Compare each ``(path, precision, graph)`` with PyTorch on ``images``; ``graph`` is
    ``plain`` or ``plugin`` (see :data:`RUNNERS`)."""
    expected = run_in_batches(torch_describe, images)
    results = []
    for path, precision, graph in files:
        make_runner, runtime = RUNNERS[graph]
        got = run_in_batches(make_runner(path), images)
        results.append(compare(expected, got, file=path.name, precision=precision,
                               runtime=runtime))
        if precision == "fp16" and graph == "plain" and reference_images > 0:
            few = images[:max(2, reference_images)]
            got = run_in_batches(reference_runner(path), few)
            results.append(compare(expected[:len(few)], got, file=path.name,
                                   precision=precision,
                                   runtime="onnx.reference (numpy FP16)"))
    return results
