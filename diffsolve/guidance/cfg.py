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

from ..checks import check_int, check_number
from ..denoisers import Denoiser, DenoiserWrapper
from ..tensors import bc
from .batching import evaluate_labels

__all__ = ["CFG"]


class CFG(DenoiserWrapper):
    """Classifier-free guidance around a class-conditional denoiser.

    Args:
        denoiser: a Denoiser taking ``labels`` (LongTensor, one per row) as conditioning,
            whose null label means "unconditional" (e.g. :func:`diffsolve.load` models).
        scale: guidance weight w (1 = conditional, 0 = unconditional, > 1 = guided); finite.
        interval: (s_lo, s_hi): guide only where s_lo <= s <= s_hi (canonical noise level).
        null_label: the unconditional label (default: ``denoiser.null_label`` or
            ``denoiser.num_classes``); at most ``num_classes``.  A real class here guides away
            from that class (negative guidance), not from the unconditional model.
        cond_key: the name of the conditioning argument (default ``"labels"``).

    Labels are required: guidance steers towards them, and a run without them would silently
    be the unconditional model (pass the null label explicitly for that).
    """

    def __init__(self, denoiser: Denoiser, scale: float, interval: tuple[float, float] = (0.0, math.inf), *,
                 null_label: int | None = None, cond_key: str = "labels"):
        super().__init__(denoiser)
        self.scale = check_number("CFG", "scale", scale)
        if not isinstance(interval, (tuple, list)) or len(interval) != 2:
            raise ValueError(f"CFG: interval must be two levels (s_lo, s_hi), got {interval!r}")
        lo = check_number("CFG", "interval[0] (s_lo)", interval[0], 0)
        hi = math.inf if interval[1] == math.inf else check_number("CFG", "interval[1] (s_hi)", interval[1], lo)
        self.interval = (lo, hi)
        if null_label is None:
            null_label = getattr(self.inner, "null_label", getattr(self.inner, "num_classes", None))
        if null_label is None:
            raise ValueError("null_label is needed: the denoiser has no null_label or num_classes attribute")
        num_classes = getattr(self.inner, "num_classes", None)
        self.null_label = check_int("CFG", "null_label", null_label, minimum=0,
                                    maximum=num_classes if isinstance(num_classes, int) and num_classes > 0 else None)
        if not isinstance(cond_key, str) or not cond_key.isidentifier():
            raise TypeError(f"CFG: cond_key must be a keyword-argument name, got {cond_key!r}")
        self.cond_key = cond_key

    def check(self, y: Tensor, cond: dict[str, Any]) -> dict[str, Any]:
        if cond.get(self.cond_key) is None:
            raise ValueError(f"CFG needs cond={{{self.cond_key!r}: ...}} (the labels guidance steers towards); "
                             f"got conditioning keys {sorted(cond) or 'none'}. For the unconditional model pass "
                             f"the null label {self.null_label}, or sample the inner denoiser without CFG")
        return self.inner.check(y, cond)

    def labels_of(self, cond: dict[str, Any], y: Tensor) -> Tensor:
        """Pop the labels from ``cond`` as one LongTensor label per row of ``y``."""
        labels = cond.pop(self.cond_key, None)
        if labels is None:
            raise ValueError(f"{type(self).__name__} needs {self.cond_key}=... (one label per row, or one for all)")
        labels = torch.as_tensor(labels, device=y.device).long()
        return labels.expand(y.shape[0]) if labels.ndim == 0 else labels

    def branches(self, y: Tensor, s: Tensor | float, labels: Tensor, cond: dict[str, Any],
                 rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One batched network evaluation of the conditional denoiser on every row and of the
        null-label denoiser on ``rows`` (a (B,) bool mask; None: all rows): ``B + rows.sum()``
        rows, conditional rows first.  Returns ``(d_cond, d_uncond)`` with ``d_uncond`` holding
        the selected rows only."""
        null = torch.full_like(labels, self.null_label)
        d_cond, d_uncond = evaluate_labels(self.inner, y, s, [labels, null], cond, self.cond_key, rows=[None, rows])
        return d_cond, d_uncond

    def inside(self, s: Tensor | float) -> Tensor | bool:
        """Where guidance applies: ``s_lo <= s <= s_hi`` (a Python bool for a float level, else a
        (B,) bool tensor)."""
        lo, hi = self.interval
        if isinstance(s, float):  # one level for the batch: one Python decision, the level stays a float
            return lo <= s <= hi
        return (s >= lo) & (s <= hi)

    def denoise(self, y: Tensor, s: Tensor | float, **cond: Any) -> Tensor:
        labels = self.labels_of(cond, y)
        inside = self.inside(s)
        any_inside = inside if isinstance(inside, bool) else bool(inside.any())
        if self.scale == 1.0 or not any_inside:
            return self.inner(y, s, **{self.cond_key: labels}, **cond)
        # one batched evaluation of 2B rows: [conditional; unconditional]
        d_cond, d_uncond = self.branches(y, s, labels, cond)
        guided = d_uncond + self.scale * (d_cond - d_uncond)  # [CFG Eq. 6] in canonical (x0) form
        if inside is True:
            return guided
        return torch.where(bc(inside, y), guided, d_cond)

    def __repr__(self) -> str:
        return f"CFG(scale={self.scale}, interval={self.interval}, inner={self.inner!r})"
