"""Adaptive Guidance (Castillo et al. 2023, "Adaptive Guidance: Training-free Acceleration of
Conditional Diffusion Models"): classifier-free guidance that stops evaluating the
unconditional branch once it no longer changes the direction of the update.

The paper observes that late in sampling the conditional and unconditional noise predictions
become aligned, and truncates CFG per sample by the cosine-similarity criterion

    gamma_t = cos(eps_c, eps_u) = <eps_c, eps_u> / (|eps_c| |eps_u|)       [AG Sec. 4, Eq. 8]
    eps_t   = eps_u + w (eps_c - eps_u)   while gamma_t' <= gamma for all earlier calls t'
    eps_t   = eps_c                        afterwards                          [AG Alg. 1]

In canonical space ``eps = (y - D) / s`` with one level per row, so the cosine is that of
``y - D_c`` and ``y - D_u`` and guidance is :class:`~diffsolve.guidance.CFG`'s extrapolation of
denoisers.  The similarity measured at a call decides the calls after it (that call still
returns the guided prediction it has paid for).  Since ``-1 <= cos <= 1``, ``gamma > 1`` never
switches (plain CFG) and ``gamma <= -1`` switches every sample before its first call
(the conditional model alone).

**Default (measured on MNIST).**  ``s_check=4.0, gamma=0.99``: the paper's criterion read only at
levels s <= 4 (scripts/adaptive_guidance_mnist.py, bench/results/adaptive-guidance-mnist.md;
labels 0..9 x 20, dpm++2m 20 NFE, metric network).  On the EDM path the cosine exceeds 0.99 at
the first level checked for almost every sample, so ``s_check`` sets the saving: 20 karras levels put 10
calls below 4 (s = 3.17 ... 0.002), 25% of CFG's rows.  Tuning seeds 0..199: at w = 1.25 97.5%
accuracy / FD 12.6 against CFG's 98.0% / 13.8, at w = 2 100% / 23.5 against 100% / 38.2; on the
disjoint seeds 1000..1199 (verification): 25% saved at both scales, at w = 1.25 96.5% / FD
11.6 against CFG's 97.5% / 12.1 (one point: at the bound), at w = 2 99.5% / 20.2 against
100% / 33.7.  Of the requested grid s_check in {3, 5, 10, 20} x gamma in {0.99, 0.995, 0.999}
none met the target (>= 25% of the rows saved, accuracy within 1 point and FD within 5% of
CFG's at both scales): s_check 3 saves 19-22.5%; at w = 1.25 s_check 5 loses 2 points (with
gamma 0.999: 1 point, but 24.5% saved), 10 and 20 lose 2 and 2.5; gamma changes little (the
switch happens at the first level checked); s_check 4 was added between 3 and 5.  Other models,
paths and NFE may want other values: ``s_check=math.inf`` is the paper's rule.

Cost is counted in network ROWS: a sample still guided costs 2 rows per call, a switched one 1
(the rows of one call are evaluated as one batch: all conditional rows, then the null rows of
the samples still guided).  ``rows`` holds this run's total, ``switched_at`` the call index at
which each sample switched (-1: never).  Both reset when the driver prepares a new run
(:meth:`prepare`) and when the batch size changes; :meth:`reset` resets by hand.

    >>> import torch, diffsolve
    >>> model = diffsolve.load("digits")
    >>> ag = AdaptiveGuidance(model, scale=2.0)
    >>> noise = torch.randn(4, *model.shape, generator=torch.Generator().manual_seed(0))
    >>> res = diffsolve.sample(ag, noise, solver="dpm++2m", nfe=10, cond={"labels": torch.arange(4)})
    >>> res.nfe, ag.rows < 2 * 4 * 10       # CFG would evaluate 80 rows
    (10, True)
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..checks import check_number
from ..denoisers import Denoiser
from .cfg import CFG

__all__ = ["AdaptiveGuidance"]


class AdaptiveGuidance(CFG):
    """CFG that switches each sample to the conditional model once ``cos(eps_c, eps_u) > gamma``.

    Args:
        denoiser, scale, interval, null_label, cond_key: as :class:`~diffsolve.guidance.CFG`
            (outside the interval a row is conditional-only, costs 1 row and is not measured).
        gamma: the cosine-similarity threshold, a number (the paper's gamma-bar; its
            experiments use values close to 1, e.g. 0.99).  ``> 1``: never switch (CFG);
            ``<= -1``: switch at once (conditional only).
        s_check: read the criterion only at levels ``s <= s_check`` (default 4, measured on
            MNIST: see the module docstring; ``math.inf``: everywhere, the paper's rule).  At
            large s both eps predictions are dominated by ``y / s``, so their cosine is near 1
            whatever the models say: on MNIST (EDM, s_max 80) gamma = 0.99
            switched every sample after its first call (accuracy 0.93 vs CFG's 0.99 at w = 2).

    Attributes (per run): ``rows`` network rows evaluated; ``calls`` denoiser calls;
    ``switched_at`` (B,) call index of each sample's switch, -1 if never.
    """

    def __init__(self, denoiser: Denoiser, scale: float, gamma: float = 0.99,
                 interval: tuple[float, float] = (0.0, math.inf), *, s_check: float = 4.0,
                 null_label: int | None = None, cond_key: str = "labels"):
        super().__init__(denoiser, scale, interval, null_label=null_label, cond_key=cond_key)
        self.gamma = check_number("AdaptiveGuidance", "gamma", gamma)
        self.s_check = math.inf if s_check == math.inf else check_number("AdaptiveGuidance", "s_check", s_check, 0)
        self.reset()

    def reset(self) -> None:
        """Forget the per-run state: every sample guided again, counters at 0."""
        self.rows, self.calls = 0, 0
        self.switched_at: Tensor | None = None

    def prepare(self, levels: Tensor, dtype: torch.dtype = torch.float64) -> None:
        self.reset()  # the driver prepares once per run
        super().prepare(levels, dtype)

    def denoise(self, y: Tensor, s: Tensor | float, **cond: Any) -> Tensor:
        b = y.shape[0]
        if self.switched_at is None or self.switched_at.shape[0] != b:
            self.reset()  # a new run (or a new batch): every sample starts guided
            self.switched_at = torch.full((b,), 0 if self.gamma <= -1 else -1, dtype=torch.long)
        labels = self.labels_of(cond, y)
        inside = self.inside(s)
        guided = (self.switched_at < 0).to(y.device)
        guided = guided & inside if isinstance(inside, Tensor) else guided & bool(inside)
        n_guided = int(guided.sum())
        self.calls += 1
        if self.scale == 1.0 or n_guided == 0:
            self.rows += b
            return self.inner(y, s, **{self.cond_key: labels}, **cond)
        rows = None if n_guided == b else guided
        d_cond, d_uncond = self.branches(y, s, labels, cond, rows)   # B + n_guided rows, one batch
        self.rows += b + n_guided
        y_g = y if rows is None else y[rows]
        d_c = d_cond if rows is None else d_cond[rows]
        out = d_uncond + self.scale * (d_c - d_uncond)               # [CFG Eq. 6] on the guided rows
        # [AG Eq. 8]: cos(eps_c, eps_u); eps = (y - D)/s shares its row's s, which cancels
        cos = torch.nn.functional.cosine_similarity((y_g - d_c).flatten(1), (y_g - d_uncond).flatten(1), dim=1)
        idx = guided.nonzero()[:, 0].cpu()
        now = cos > self.gamma
        if self.s_check < math.inf:  # the criterion is read only at levels s <= s_check
            now = now & ((s <= self.s_check) if isinstance(s, float) else (s if rows is None else s[rows]) <= self.s_check)
        now = now.cpu()
        self.switched_at[idx[now]] = self.calls          # [AG Alg. 1]: conditional-only from the next call
        if rows is None:
            return out
        full = d_cond.clone()
        full[rows] = out
        return full

    @property
    def saved(self) -> float:
        """The fraction of full CFG's rows (2 per sample per call, no interval) this run did not evaluate."""
        b = 0 if self.switched_at is None else self.switched_at.shape[0]
        return 0.0 if self.calls == 0 else 1.0 - self.rows / (2 * b * self.calls)

    def __repr__(self) -> str:
        return (f"AdaptiveGuidance(scale={self.scale}, gamma={self.gamma}, s_check={self.s_check}, interval={self.interval}, "
                f"inner={self.inner!r})")

