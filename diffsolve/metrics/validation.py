"""Controlled degradations of real MNIST images, to validate the image metrics: a metric worth
reporting must rise monotonically as real images are corrupted more, and must score broken
"samplers" far from the real-data floor. Used by tests/test_metrics.py and by
``python scripts/train_feature_net.py --validate`` (the table in docs/metrics.md).

Example::

    >>> import torch
    >>> x = -torch.ones(2, 1, 28, 28)
    >>> x[:, :, 14, 14] = 1.0
    >>> y = gaussian_blur(x, 1.0)
    >>> bool(y[0, 0, 14, 14] < 1.0) and abs(float((y + 1).sum() - (x + 1).sum())) < 1e-3  # mass kept
    True
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["gaussian_blur", "add_noise", "BROKEN", "broken_images", "validation_table"]


def gaussian_blur(x: Tensor, width: float) -> Tensor:
    """Separable Gaussian blur of (N, 1, H, W) images with standard deviation ``width`` pixels
    (kernel radius ceil(3 width)), padding with the background value -1."""
    if width <= 0:
        raise ValueError(f"blur width must be positive, got {width}")
    r = max(1, math.ceil(3 * width))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-t**2 / (2 * width**2))
    k = k / k.sum()
    xp = F.pad(x, (r, r, r, r), value=-1.0)
    xp = F.conv2d(xp, k.view(1, 1, 1, -1))
    return F.conv2d(xp, k.view(1, 1, -1, 1))


def add_noise(x: Tensor, std: float, generator: torch.Generator | None = None) -> Tensor:
    """x + std * N(0, I), clamped to [-1, 1]; the same generator state gives the same draw at
    every std (common random numbers make curves over std monotone in expectation and in practice)."""
    z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return (x + std * z).clamp(-1, 1)


#: deliberately broken "samplers": name -> images from real images (and a generator)
BROKEN: dict[str, Callable[[Tensor, torch.Generator], Tensor]] = {
    "uniform-noise": lambda x, g: torch.rand(x.shape, generator=g, dtype=x.dtype) * 2 - 1,
    "inverted": lambda x, g: -x,
    "shifted-8px": lambda x, g: torch.roll(x, shifts=(8, 8), dims=(2, 3)),
    "blank": lambda x, g: torch.full_like(x, -1.0),
}


def broken_images(name: str, x: Tensor, seed: int = 0) -> Tensor:
    """One of :data:`BROKEN` applied to real images x."""
    if name not in BROKEN:
        raise ValueError(f"unknown broken sampler {name!r}; accepted: {', '.join(BROKEN)}")
    return BROKEN[name](x, torch.Generator().manual_seed(seed))


def validation_table(x: Tensor, labels: Tensor, noise_stds=(0.1, 0.2, 0.4, 0.8),
                     blur_widths=(0.6, 1.0, 1.5, 2.5), seed: int = 0) -> list[tuple[str, dict]]:
    """:func:`~diffsolve.metrics.image_quality` of real images x, of their noisy and blurred
    versions, and of every broken sampler: a list of (row name, metrics)."""
    from . import image_quality

    rows = [("real (train)", image_quality(x, labels))]
    for s in noise_stds:
        rows.append((f"noise std {s}", image_quality(add_noise(x, s, torch.Generator().manual_seed(seed)), labels)))
    for w in blur_widths:
        rows.append((f"blur width {w}", image_quality(gaussian_blur(x, w), labels)))
    for name in BROKEN:
        rows.append((name, image_quality(broken_images(name, x, seed), labels)))
    return rows
