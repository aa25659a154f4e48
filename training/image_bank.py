"""Training images, decoded and resized once, kept in memory up to a budget."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vpr_edge.images import load_image, resize


class ImageBank:
    """``uint8 [H, W, 3]`` images by path at one size, with an LRU memory budget."""

    def __init__(self, height: int, width: int, *, budget_bytes: int = 2 << 30) -> None:
        self.height = height
        self.width = width
        self._budget = budget_bytes
        self._cache: OrderedDict[Path, np.ndarray] = OrderedDict()
        self._bytes = 0

    def get(self, path: Path) -> np.ndarray:
        image = self._cache.get(path)
        if image is not None:
            self._cache.move_to_end(path)
            return image
        image = resize(load_image(path), self.height, self.width)
        self._cache[path] = image
        self._bytes += image.nbytes
        while self._bytes > self._budget and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._bytes -= old.nbytes
        return image

    def batch(self, paths: Sequence[Path]) -> torch.Tensor:
        """``uint8 [N, H, W, 3]`` tensor of these images."""
        return torch.from_numpy(np.stack([self.get(p) for p in paths]))
