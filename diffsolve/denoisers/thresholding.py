"""Clipping and dynamic thresholding of the denoised estimate (a wrapper).

    >>> import torch
    >>> from diffsolve.denoisers import FunctionDenoiser, Thresholded
    >>> D = Thresholded(FunctionDenoiser(lambda y, s: 3 * y), "clip", max_value=1.0)
    >>> D(torch.ones(1, 2), 0.5).tolist()
    [[1.0, 1.0]]
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..tensors import bc
from ..checks import check_number
from .base import Denoiser, DenoiserWrapper

__all__ = ["Thresholded"]


class Thresholded(DenoiserWrapper):
    """Clip the denoised estimate: ``kind="clip"`` clamps to [-max_value, max_value];
    ``kind="dynamic"`` is Imagen's dynamic thresholding (Saharia et al. 2022, Sec. 2.3): per
    sample, r = max(quantile(|x0|, percentile), max_value); x0 <- clamp(x0, -r, r) * max_value / r.

    ``max_value`` is in the data's own units (1 for data in [-1, 1]) and must be > 0.
    """

    KINDS = ("clip", "dynamic")

    def __init__(self, inner: Denoiser, kind: str = "dynamic", *, percentile: float = 0.995,
                 max_value: float = 1.0):
        super().__init__(inner)
        if kind not in self.KINDS:
            raise ValueError(f"Thresholded: unknown kind {kind!r}; accepted: {', '.join(self.KINDS)}")
        self.kind = kind
        self.percentile = check_number("Thresholded", "percentile", percentile, 0, 1, low_open=True)
        self.max_value = check_number("Thresholded", "max_value", max_value, 0, low_open=True)

    def denoise(self, y: Tensor, s: Tensor | float, **cond: Any) -> Tensor:
        x0 = self.inner(y, s, **cond)
        if self.kind == "clip":
            return x0.clamp(-self.max_value, self.max_value)
        flat = x0.reshape(x0.shape[0], -1).abs()
        r = bc(torch.quantile(flat, self.percentile, dim=1).clamp(min=self.max_value), x0)
        return torch.maximum(torch.minimum(x0, r), -r) * (self.max_value / r)

    def __repr__(self) -> str:
        return f"Thresholded({self.kind!r}, percentile={self.percentile}, max_value={self.max_value}, inner={self.inner!r})"
