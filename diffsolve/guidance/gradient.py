"""Gradient guidance through the denoiser: ``D'(y, s) = D + s^2 J^T v(D, s)``.

Guidance in canonical space (DESIGN.md): adding a term g to the score of p_s(y) is
``D' = D + s^2 g``.  For a reward (or likelihood) read through x0-hat, ``g = J^T v`` where
``J = dD/dy`` and ``v`` is a covector on data: ``v = lam grad_x0 log r`` at x0 = D for DPS-style
reward guidance and TDS's twisted proposal, PiGDM's preconditioned residual for inverse
problems.  One vector-Jacobian product (VJP) through the network per call, counted in
``vjps`` (a VJP costs about one more network call).

    >>> import torch, diffsolve
    >>> g = diffsolve.exact_model("gmm-2d")
    >>> w = VJPGuided(g, lambda x0, s: torch.ones_like(x0))   # v = 1: pulls x0-hat along J^T 1
    >>> res = diffsolve.sample(w, torch.randn(4, 2, dtype=torch.float64), solver="ddim", nfe=5)
    >>> res.nfe, w.vjps
    (5, 5)
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from ..checks import check_number
from ..denoisers import DenoiserWrapper
from ..tensors import bc

__all__ = ["VJPGuided", "check_clip", "clip_x0"]

Covector = Callable[[Tensor, "float | Tensor"], Tensor]


def check_clip(owner: str, clip: Any) -> tuple[float, float] | None:
    """The clipping option: None (off, the default: clipping biases the posterior) or a pair
    ``(lo, hi)`` of finite numbers with lo < hi, in the prior's data units."""
    if clip is None:
        return None
    if not isinstance(clip, (tuple, list)) or len(clip) != 2:
        raise ValueError(f"{owner}: clip={clip!r} is not accepted; accepted: None or (lo, hi), e.g. (-1, 1)")
    lo = check_number(owner, "clip[0]", clip[0])
    hi = check_number(owner, "clip[1]", clip[1])
    if not lo < hi:
        raise ValueError(f"{owner}: clip={clip!r} is not accepted; accepted: (lo, hi) with lo < hi")
    return lo, hi


def clip_x0(x: Tensor, clip: tuple[float, float] | None) -> Tensor:
    """x clamped to ``clip`` (unchanged for None)."""
    return x if clip is None else x.clamp(clip[0], clip[1])


class VJPGuided(DenoiserWrapper):
    """``D'(y, s) = clip(D + s^2 J^T v(D, s))`` with ``J = dD/dy`` (one VJP per call, counted in
    ``vjps``); ``covector(x0, s)`` returns ``v`` per row (shape of x0), from the detached x0-hat.
    The VJP runs in the network's own precision; the inner denoiser is called once per call."""

    def __init__(self, inner, covector: Covector, clip: tuple[float, float] | None = None):
        super().__init__(inner)
        self.covector, self.clip, self.vjps = covector, clip, 0

    def prepare(self, levels: Tensor, dtype: torch.dtype = torch.float64) -> None:
        self.vjps = 0  # the driver prepares once per run: the count is this run's
        super().prepare(levels, dtype)

    def denoise(self, y: Tensor, s, **cond):
        with torch.enable_grad():
            y_in = y.detach().requires_grad_(True)
            d = self.inner(y_in, s, **cond)
            v = self.covector(d.detach(), s).to(d.dtype)
            (g,) = torch.autograd.grad(d, y_in, grad_outputs=v)
        self.vjps += 1
        s2 = s * s if isinstance(s, float) else bc(s * s, y)
        return clip_x0(d.detach() + s2 * g.to(y.dtype), self.clip)
