"""A usable model in minutes without training: pretrained backbone + k-means NetVLAD.

``init_model(config, image_paths)`` runs the ImageNet backbone over the user's images,
samples local descriptors, clusters them (k-means) into the NetVLAD centroids with the
paper's alpha, and can fit PCA-whitening on the same images when there are enough of them.
This is what ``vpr-train init`` does.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vpr_edge.errors import ImageDecodeError, InvalidInputError
from vpr_edge.images import load_image, resize
from vpr_edge.sources import is_image_file, not_a_folder

from .config import ModelConfig
from .model import VPRModel, build_model, images_to_tensor
from .netvlad import NetVLAD, kmeans
from .whitening import PCAWhitening

log = logging.getLogger("vpr_edge.training")

@dataclass
class InitReport:
    """What :func:`init_model` did: images used/skipped, descriptors clustered, alpha."""

    images_used: int = 0
    skipped: list[str] = field(default_factory=list)
    descriptors: int = 0
    alpha: float | None = None
    whitening_dim: int | None = None

    def to_dict(self) -> dict:
        return {"images_used": self.images_used, "skipped": len(self.skipped),
                "skipped_examples": self.skipped[:5], "descriptors": self.descriptors,
                "alpha": self.alpha, "whitening_dim": self.whitening_dim}


def list_images(folder: str | os.PathLike, *, recursive: bool = True) -> list[Path]:
    """Image files under ``folder`` (sorted), by suffix; hidden files and folders left out."""
    root = Path(folder)
    if not root.is_dir():
        raise InvalidInputError(not_a_folder(root))
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in root.glob(pattern) if is_image_file(p)
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def iter_image_batches(paths: Sequence[Path], height: int, width: int, batch_size: int,
                       report: InitReport, progress: bool, desc: str):
    """uint8 ``[B, H, W, 3]`` batches of the readable images; unreadable ones are counted."""
    from tqdm import tqdm

    batch: list[np.ndarray] = []
    for path in tqdm(paths, desc=desc, unit="img", disable=not progress):
        try:
            batch.append(resize(load_image(path), height, width))
        except ImageDecodeError as exc:
            report.skipped.append(str(exc))
            log.warning("skipping %s", exc)
            continue
        if len(batch) == batch_size:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


@torch.no_grad()
def init_model(config: ModelConfig, image_paths: Sequence[str | os.PathLike], *,
               max_images: int = 500, descriptors_per_image: int = 100,
               kmeans_iterations: int = 30, whitening_dim: int | None = None,
               batch_size: int = 16, seed: int = 0, progress: bool = True
               ) -> tuple[VPRModel, InitReport]:
    """Build ``config``'s model and initialise its NetVLAD layer from ``image_paths``.

    Args:
        config: the architecture (its backbone should be pretrained, or clusters are noise).
        image_paths: images from the deployment domain (a few hundred is plenty).
        max_images: at most this many images are used (evenly spaced over the list).
        descriptors_per_image: local descriptors sampled per image for k-means.
        whitening_dim: also fit PCA-whitening to this many dims on the images' descriptors
            (needs more images than dims).
        seed: makes sampling and k-means repeatable.

    Returns:
        the model (eval mode) and an :class:`InitReport`.
    """
    paths = [Path(p) for p in image_paths]
    if not paths:
        raise InvalidInputError("no images to initialise from: give a folder with images")
    if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1:
        raise InvalidInputError(f"--max-images must be at least 1, got {max_images!r}")
    if len(paths) > max_images:
        keep = np.linspace(0, len(paths) - 1, max_images).round().astype(int)
        paths = [paths[i] for i in keep]
    model = build_model(config.replace(whitening_dim=None, whitening_max_dim=None)).eval()
    report = InitReport()
    height, width = config.preprocess.input_height, config.preprocess.input_width
    gen = torch.Generator().manual_seed(seed)
    samples = []
    for batch in iter_image_batches(paths, height, width, batch_size, report, progress,
                                    "local features"):
        feats = model.local_features(images_to_tensor(batch, config.preprocess))
        report.images_used += feats.shape[0]
        if isinstance(model.aggregation, NetVLAD):
            if model.aggregation.normalize_input:
                feats = F.normalize(feats, dim=1)
            flat = feats.flatten(2).transpose(1, 2)  # [B, HW, D]
            take = min(descriptors_per_image, flat.shape[1])
            for row in flat:
                pick = torch.randperm(row.shape[0], generator=gen)[:take]
                samples.append(row[pick])
    if report.images_used == 0:
        raise InvalidInputError(
            f"none of the {len(paths)} images could be read ({report.skipped[0]})"
        )
    if isinstance(model.aggregation, NetVLAD):
        data = torch.cat(samples)
        report.descriptors = int(data.shape[0])
        k = model.aggregation.num_clusters
        if data.shape[0] < k:
            raise InvalidInputError(
                f"{data.shape[0]} local descriptors cannot make {k} clusters: use more images"
            )
        log.info("k-means: %d clusters on %d descriptors", k, data.shape[0])
        centroids = kmeans(data, k, iterations=kmeans_iterations, seed=seed)
        report.alpha = model.aggregation.init_from_clusters(centroids, data)
    if whitening_dim is not None:
        fit_whitening(model, paths, whitening_dim, batch_size=batch_size, progress=progress,
                      report=report)
    return model.eval(), report


@torch.no_grad()
def fit_whitening(model: VPRModel, image_paths: Sequence[Path], dim: int, *,
                  max_dim: int | None = None, batch_size: int = 16, progress: bool = True,
                  report: InitReport | None = None, whiten: bool = True) -> PCAWhitening:
    """Fit PCA-whitening (``max_dim`` stored components, ``dim`` used) on these images
    (``whiten=False``: a PCA projection without the variance scaling)."""
    report = report if report is not None else InitReport()
    model.set_whitening(None)
    model.eval()
    pre = model.config.preprocess
    descriptors = [
        model(images_to_tensor(batch, pre)).numpy()
        for batch in iter_image_batches(image_paths, pre.input_height, pre.input_width,
                                        batch_size, report, progress, "whitening descriptors")
    ]
    data = np.concatenate(descriptors) if descriptors else np.zeros((0, model.dim))
    whitening = PCAWhitening(model.dim, max_dim or dim, dim)
    whitening.fit(data, whiten=whiten)
    model.set_whitening(whitening)
    report.whitening_dim = dim
    return whitening
