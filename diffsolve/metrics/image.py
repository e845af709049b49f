"""Per-image fidelity to a ground truth: PSNR and SSIM, on images in a stated pixel range.

* :func:`psnr` -- ``10 log10(R^2 / MSE)`` per image (R the range's width).
* :func:`ssim` -- the structural similarity of Wang, Bovik, Sheikh and Simoncelli (IEEE TIP 2004,
  Eq. 13), with their constants K1 = 0.01, K2 = 0.03 and an 11 x 11 Gaussian window of std 1.5,
  "valid" convolution (no padding), averaged over the map and the channels, per image.

Both clamp to ``data_range`` first (a reconstruction outside the pixel range is shown clamped)
and compute in float64.

    >>> import torch
    >>> x = torch.zeros(1, 1, 16, 16); y = x + 0.1
    >>> round(float(psnr(y, x)[0]), 6)                       # MSE 0.01 on [0, 1]
    20.0
    >>> float(ssim(x + 0.5, x + 0.5)[0])
    1.0
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["psnr", "ssim", "to_unit_range"]

_K1, _K2, _WIN, _STD = 0.01, 0.03, 11, 1.5


def _images(x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim != 4:
        raise ValueError(f"{name} must be images (N, C, H, W), got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return x.detach().to(torch.float64).cpu()


def _pair(x: Tensor, ref: Tensor, data_range: tuple[float, float]) -> tuple[Tensor, Tensor, float]:
    x, ref = _images(x, "x"), _images(ref, "ref")
    if x.shape != ref.shape:
        raise ValueError(f"x and ref have different shapes: {tuple(x.shape)} vs {tuple(ref.shape)}")
    lo, hi = float(data_range[0]), float(data_range[1])
    if not hi > lo:
        raise ValueError(f"data_range must be (lo, hi) with hi > lo, got {data_range!r}")
    return x.clamp(lo, hi), ref.clamp(lo, hi), hi - lo


def to_unit_range(x: Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> Tensor:
    """Images in ``value_range`` mapped to [0, 1] (clamped), float64.

    >>> to_unit_range(torch.tensor([-1.0, 0.0, 3.0])).tolist()
    [0.0, 0.5, 1.0]
    """
    lo, hi = value_range
    return ((x.detach().to(torch.float64) - lo) / (hi - lo)).clamp(0, 1)


def psnr(x: Tensor, ref: Tensor, data_range: tuple[float, float] = (0.0, 1.0)) -> Tensor:
    """Peak signal-to-noise ratio of each image of ``x`` against ``ref`` (N,), in dB; an exact
    match gives inf."""
    x, ref, r = _pair(x, ref, data_range)
    mse = (x - ref).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(r * r / mse)


def _window(channels: int) -> Tensor:
    t = torch.arange(_WIN, dtype=torch.float64) - (_WIN - 1) / 2
    g = torch.exp(-t * t / (2 * _STD * _STD))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, _WIN, _WIN).contiguous()


def ssim(x: Tensor, ref: Tensor, data_range: tuple[float, float] = (0.0, 1.0)) -> Tensor:
    """Mean structural similarity of each image of ``x`` against ``ref`` (N,) [Wang et al. 2004,
    Eq. 13]; images must be at least 11 x 11."""
    x, ref, r = _pair(x, ref, data_range)
    C = x.shape[1]
    if min(x.shape[2:]) < _WIN:
        raise ValueError(f"ssim needs images of at least {_WIN}x{_WIN}, got {tuple(x.shape[2:])}")
    w = _window(C)
    blur = lambda v: F.conv2d(v, w, groups=C)  # noqa: E731
    mu_x, mu_y = blur(x), blur(ref)
    sxx, syy, sxy = blur(x * x) - mu_x ** 2, blur(ref * ref) - mu_y ** 2, blur(x * ref) - mu_x * mu_y
    c1, c2 = (_K1 * r) ** 2, (_K2 * r) ** 2
    m = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))
    return m.flatten(1).mean(1)

