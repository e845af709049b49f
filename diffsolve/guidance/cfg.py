"""Classifier-free guidance (Ho & Salimans 2022) as a composable Denoiser, with the guidance
interval of Kynkaanniemi et al. (2024, "Applying guidance in a limited interval improves
sample and distribution quality in diffusion models").

In canonical space (DESIGN.md) guidance is the extrapolation of denoisers

    D_cfg(y, s, c) = D(y, s, null) + w * (D(y, s, c) - D(y, s, null))          (Ho & Salimans Eq. 6)

which is the usual eps form, because eps_hat = (y - D) / s is affine in D.  ``w = 1`` is the
conditional model, ``w = 0`` the unconditional one.  Guidance is applied only to rows whose
noise level lies in ``interval = (s_lo, s_hi)`` (Kynkaanniemi et al. Eq. 2); elsewhere the
conditional denoiser is used alone.

Cost: where guidance applies, the two branches are evaluated as ONE batched network call of
2B rows (conditional rows, then null-label rows); where no row is inside the interval, one call
of B rows.  The driver counts denoiser calls, so a CFG call counts as one NFE either way; its
cost is that of a 2B-row evaluation.

    >>> import torch, diffsolve
    >>> model = diffsolve.load("digits")
    >>> guided = diffsolve.CFG(model, scale=2.0, interval=(0.1, 10.0))
    >>> noise = torch.randn(4, *model.shape, generator=torch.Generator().manual_seed(0))
    >>> res = diffsolve.sample(guided, noise, solver="dpm++2m", nfe=10, cond={"labels": torch.arange(4)})
    >>> res.nfe
    10
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..denoisers import Denoiser, _bc, as_denoiser

__all__ = ["CFG"]


class CFG(Denoiser):
    """Classifier-free guidance around a class-conditional denoiser.

    Args:
        denoiser: a Denoiser taking ``labels`` (LongTensor, one per row) as conditioning,
            whose null label means "unconditional" (e.g. :func:`diffsolve.load` models).
        scale: guidance weight w (1 = conditional, 0 = unconditional, > 1 = guided).
        interval: (s_lo, s_hi): guide only where s_lo <= s <= s_hi (canonical noise level).
        null_label: the unconditional label (default: ``denoiser.null_label`` or
            ``denoiser.num_classes``).
        cond_key: the name of the conditioning argument (default ``"labels"``).

    Calling without labels gives the unconditional denoiser.
    """

    def __init__(self, denoiser: Denoiser, scale: float, interval: tuple[float, float] = (0.0, math.inf), *,
                 null_label: int | None = None, cond_key: str = "labels"):
        self.inner = as_denoiser(denoiser)
        self.scale = float(scale)
        lo, hi = (float(v) for v in interval)
        if not (0 <= lo <= hi):
            raise ValueError(f"guidance interval must satisfy 0 <= s_lo <= s_hi, got {interval}")
        self.interval = (lo, hi)
        if null_label is None:
            null_label = getattr(denoiser, "null_label", getattr(denoiser, "num_classes", None))
        if null_label is None:
            raise ValueError("null_label is needed: the denoiser has no null_label or num_classes attribute")
        self.null_label, self.cond_key = int(null_label), cond_key
        self.path = getattr(denoiser, "path", None)
        for attr in ("shape", "num_classes", "allow_extrapolation", "class_names"):
            if hasattr(denoiser, attr):
                setattr(self, attr, getattr(denoiser, attr))

    def denoise(self, y: Tensor, s: Tensor, **cond: Any) -> Tensor:
        labels = cond.pop(self.cond_key, None)
        if labels is None:
            return self.inner(y, s, **cond)
        b = y.shape[0]
        labels = torch.as_tensor(labels, device=y.device).long()
        if labels.ndim == 0:
            labels = labels.expand(b)
        lo, hi = self.interval
        inside = (s >= lo) & (s <= hi)
        if self.scale == 1.0 or not bool(inside.any()):
            return self.inner(y, s, **{self.cond_key: labels}, **cond)
        # one batched evaluation of 2B rows: [conditional; unconditional]
        null = torch.full_like(labels, self.null_label)
        both = {k: (torch.cat([v, v]) if isinstance(v, Tensor) and v.ndim > 0 and v.shape[0] == b else v)
                for k, v in cond.items()}
        out = self.inner(torch.cat([y, y]), torch.cat([s, s]), **{self.cond_key: torch.cat([labels, null])}, **both)
        d_cond, d_uncond = out[:b], out[b:]
        guided = d_uncond + self.scale * (d_cond - d_uncond)
        return torch.where(_bc(inside, y), guided, d_cond)

    def __repr__(self) -> str:
        return f"CFG(scale={self.scale}, interval={self.interval}, inner={self.inner!r})"
