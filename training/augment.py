"""Photometric augmentation: robots come back to places at other times of day.

Operates on float ``[N, 3, H, W]`` images in 0..1 (before normalisation), with plain tensor
ops, deterministic under a ``torch.Generator``. Each transform fires with its own
probability and draws its strength from a range, per image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vpr_edge.errors import InvalidInputError


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities ``p_*`` and ranges of each transform; ``enabled=False`` is identity.

    Attributes:
        brightness: multiplicative range; contrast: blend with the mean grey level;
        gamma: exponent range; saturation: blend with grey; blur: Gaussian sigma range (px);
        low_light: darkening factor range, with ``noise`` std of added sensor noise.
    """

    enabled: bool = True
    p_brightness: float = 0.5
    brightness: tuple[float, float] = (0.6, 1.4)
    p_contrast: float = 0.5
    contrast: tuple[float, float] = (0.6, 1.4)
    p_gamma: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.5)
    p_saturation: float = 0.3
    saturation: tuple[float, float] = (0.5, 1.5)
    p_blur: float = 0.2
    blur: tuple[float, float] = (0.5, 1.5)
    p_low_light: float = 0.2
    low_light: tuple[float, float] = (0.15, 0.5)
    noise: float = 0.03

    def __post_init__(self) -> None:
        for name in ("p_brightness", "p_contrast", "p_gamma", "p_saturation", "p_blur",
                     "p_low_light"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InvalidInputError(f"{name} must be a probability, got {getattr(self, name)}")
        for name in ("brightness", "contrast", "gamma", "saturation", "blur", "low_light"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise InvalidInputError(f"{name} range must satisfy 0 <= lo <= hi, got {lo, hi}")


def _draw(n: int, p: float, lo: float, hi: float, gen: torch.Generator
          ) -> tuple[torch.Tensor, torch.Tensor]:
    fire = torch.rand(n, generator=gen) < p
    value = lo + (hi - lo) * torch.rand(n, generator=gen)
    return fire, value.view(n, 1, 1, 1)


def _grey(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(round(2 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"),
                 kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"),
                    kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def augment(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator
            ) -> torch.Tensor:
    """Augmented copy of float ``[N, 3, H, W]`` images in 0..1 (values stay in 0..1)."""
    if not config.enabled:
        return images
    if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise InvalidInputError(f"augment expects float [N, 3, H, W], got {images.dtype} "
                                f"{tuple(images.shape)}")
    x = images.clone()
    n = x.shape[0]
    fire, v = _draw(n, config.p_brightness, *config.brightness, generator)
    x = torch.where(fire.view(n, 1, 1, 1), x * v, x)
    fire, v = _draw(n, config.p_contrast, *config.contrast, generator)
    mean = _grey(x).mean(dim=(2, 3), keepdim=True)
    x = torch.where(fire.view(n, 1, 1, 1), (x - mean) * v + mean, x)
    fire, v = _draw(n, config.p_saturation, *config.saturation, generator)
    grey = _grey(x)
    x = torch.where(fire.view(n, 1, 1, 1), (x - grey) * v + grey, x)
    x = x.clamp(0.0, 1.0)
    fire, v = _draw(n, config.p_gamma, *config.gamma, generator)
    x = torch.where(fire.view(n, 1, 1, 1), x.clamp_min(1e-6) ** v, x)
    fire, v = _draw(n, config.p_blur, *config.blur, generator)
    for i in torch.nonzero(fire).flatten().tolist():
        x[i:i + 1] = _blur(x[i:i + 1], float(v[i]))
    fire, v = _draw(n, config.p_low_light, *config.low_light, generator)
    noise = torch.randn(x.shape, generator=generator) * config.noise
    x = torch.where(fire.view(n, 1, 1, 1), x * v + noise * v.sqrt(), x)
    return x.clamp(0.0, 1.0)
