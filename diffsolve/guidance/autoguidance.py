"""Autoguidance (Karras et al. 2024, "Guiding a Diffusion Model with a Bad Version of Itself"):
guide a model with a weaker version of itself (smaller, shorter-trained) instead of an
unconditional model.

    D_w(y, s, c) = D_0(y, s, c) + w (D_1(y, s, c) - D_0(y, s, c))          [Autoguidance Eq. 2]

with ``D_1`` the main model and ``D_0`` the guide, both given the same conditioning.  The two
models make the same kinds of errors, the guide more strongly, so extrapolating away from the
guide removes errors rather than diversity (CFG's unconditional branch also differs in *what*
it models).  ``w = 1`` is the main model.  In canonical space both are denoisers at the same
``(y, s)``, so two models trained on different paths may guide each other.

Cost: every call evaluates both networks (two networks cannot share a batch): 2 rows per
sample, one from each, counted in ``guide_calls`` (calls of the guide; the driver's NFE counts
calls of this wrapper) and ``rows``; both reset when the driver prepares a new run.

    >>> import torch, diffsolve
    >>> main = diffsolve.load("digits")
    >>> ag = Autoguidance(main, main, scale=2.0)          # a guide equal to the main model: no change
    >>> y = torch.randn(3, *main.shape, dtype=torch.float64)
    >>> bool(torch.equal(ag(y, 1.0, labels=torch.arange(3)), main(y, 1.0, labels=torch.arange(3))))
    True
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..checks import check_number
from ..denoisers import Denoiser, DenoiserWrapper, as_denoiser

__all__ = ["Autoguidance"]


class Autoguidance(DenoiserWrapper):
    """``D_guide + scale (D_main - D_guide)`` [Autoguidance Eq. 2].

    Args:
        main: the model sampled (its path, shape and classes are the wrapper's).
        guide: a weaker model of the same data (same ``shape``; same classes when conditional),
            e.g. a smaller or shorter-trained network of the same recipe.
        scale: guidance weight w (finite; 1 = the main model; the paper's best MNIST-scale
            values are modest, 1.5-3).
    """

    def __init__(self, main: Denoiser, guide: Denoiser, scale: float):
        super().__init__(main)
        self.guide = as_denoiser(guide)
        self.scale = check_number("Autoguidance", "scale", scale)
        for attr in ("shape", "num_classes"):
            a, b = getattr(self.inner, attr, None), getattr(self.guide, attr, None)
            if attr == "shape" and a is not None and b is not None:
                a, b = tuple(a), tuple(b)
            if a is not None and b is not None and a != b:
                raise ValueError(f"Autoguidance: the guide's {attr} is {b!r}, the main model's {a!r}; "
                                 f"the guide must model the same data")
        self.rows, self.guide_calls = 0, 0

    def prepare(self, levels: Tensor, dtype: torch.dtype = torch.float64) -> None:
        self.rows, self.guide_calls = 0, 0  # the driver prepares once per run
        self.inner.prepare(levels, dtype)
        self.guide.prepare(levels, dtype)

    def check(self, y: Tensor, cond: dict[str, Any]) -> dict[str, Any]:
        self.guide.check(y, dict(cond))
        return self.inner.check(y, cond)

    def denoise(self, y: Tensor, s: Tensor | float, **cond: Any) -> Tensor:
        d_main = self.inner(y, s, **cond)
        if self.scale == 1.0:
            self.rows += y.shape[0]
            return d_main
        d_guide = self.guide(y, s, **cond)
        self.guide_calls += 1
        self.rows += 2 * y.shape[0]
        return d_guide + self.scale * (d_main - d_guide)   # [Autoguidance Eq. 2]

    def __repr__(self) -> str:
        return f"Autoguidance(scale={self.scale}, main={self.inner!r}, guide={self.guide!r})"
