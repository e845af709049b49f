"""DPS: Diffusion Posterior Sampling (Chung, Kim, Mccann, Klasky & Ye, ICLR 2023, Algorithm 1).

The paper approximates the likelihood of the noisy state through x0-hat,
``p(meas | x_t) ~ p(meas | x0_hat(x_t))`` [DPS Eq. 16], and corrects every ancestral step by
``x_{i-1} <- x'_{i-1} - zeta_i grad_{x_i} ||meas - A x0_hat||^2`` with
``zeta_i = zeta' / ||meas - A x0_hat||`` [DPS Alg. 1 l.7, App. C.2] on the 1000-step linear-beta
VP chain (beta from 1e-4 to 0.02).

Canonical space.  With ``y = x / alpha``, ``s = sigma / alpha`` and ``D' = D + s^2 g`` (a term g
added to the score), an ancestral step from s to s' moves y by ``(s^2 - s'^2) g`` through D'.
Matching Alg. 1's correction on its own chain (``s_i^2 - s_{i-1}^2 = beta_i / abar_i`` and
``alpha_i alpha_{i-1} = abar_i / sqrt(alpha_i)``) gives the score term

    g = -(zeta' / ||r||) (N / beta(s)) grad_y ||r||^2,    r = meas - A D(y, s)          (G1)

with N = 1000 and the linear schedule's beta per unit time written in s,
``beta(s) = sqrt(beta_0^2 + 2 (beta_1 - beta_0) log(1 + s^2))`` (beta_0 = 0.1, beta_1 = 20;
the factor sqrt(alpha_i) = 1 - O(1e-2) is dropped).  (G1) does not depend on our grid: at
1000 DDPM steps it is the paper's sampler, at 10 steps the same guidance field integrated
with larger steps (the paper's per-step rule would apply 100x less guidance there).
``grad_y ||r||^2 = -2 J^T A^T r`` costs one VJP through the denoiser per evaluation.

Cost: nfe = forward calls + VJPs = 2 per solver evaluation (``nfe=20``: 10 ddpm steps).  The
measurement noise sigma_y does not enter (as in the paper: zeta replaces 1/sigma_y^2).

    >>> from diffsolve.inverse import solve_inverse
    >>> from diffsolve.inverse.methods.guidance import demo_problem
    >>> res = solve_inverse(**demo_problem(), method="dps", nfe=20, num=4)
    >>> res.nfe, res.info["vjp"], res.info["solver"]
    (20, 10, 'ddpm')
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ...checks import check_number
from ..problem import Problem
from .base import InverseMethod, register
from .guidance import VJPGuided, check_clip, per_family, run_guided

__all__ = ["DPS"]

#: zeta' of [DPS App. C.2]: 1.0 for inpainting, super-resolution and Gaussian deblurring on FFHQ
#: 256x256x3 images.  Alg. 1's step has a fixed norm (zeta' |grad| / |r|), so its size per
#: coordinate falls as 1/sqrt(n): our default keeps the paper's per-coordinate step,
#: zeta' = ZETA * sqrt(n / N_PAPER) (MNIST: 0.063; 2-D: 0.0032).
ZETA = {"default": 1.0}
N_PAPER = 3 * 256 * 256
#: the chain Alg. 1 runs on: N steps of the linear beta schedule (per unit time beta_0 -> beta_1)
N_REF, BETA_0, BETA_1 = 1000, 0.1, 20.0


def beta_of_s(s):
    """beta(t) of the linear VP schedule at the time where its s = sigma/alpha equals ``s`` (a
    float or a tensor of levels): sqrt(beta_0^2 + 2 (beta_1 - beta_0) log(1 + s^2))."""
    if isinstance(s, float):
        return math.sqrt(BETA_0**2 + 2 * (BETA_1 - BETA_0) * math.log1p(s * s))
    return torch.sqrt(BETA_0**2 + 2 * (BETA_1 - BETA_0) * torch.log1p(s * s))


@register
class DPS(InverseMethod):
    """Diffusion posterior sampling (Chung et al. 2023, Alg. 1) as a guidance wrapper (G1).

    Options:
        zeta: zeta' of [DPS Alg. 1, App. C.2] (default: the paper's 1.0 for inpainting,
            super-resolution and Gaussian deblurring on 256x256x3 images, scaled by
            sqrt(n / 196608) for data of n values, so that the step per coordinate is the
            paper's: Alg. 1's step has a fixed norm).
        solver: any solver of ours (default ``"ddpm"``, the paper's ancestral sampler);
            ``solver_options`` are passed to it.
        clip: None (default) or (lo, hi): clamp the guided x0-hat.
    """

    name = "dps"
    paper = "Diffusion Posterior Sampling for General Noisy Inverse Problems (Chung et al., ICLR 2023), Alg. 1"
    cost = "2 per solver evaluation: 1 forward call + 1 VJP (nfe=N runs N/2 evaluations; N even)"
    needs = ("vjp",)
    default_nfe = 100

    def __init__(self, zeta: float | None = None, solver: str = "ddpm", clip: Any = None,
                 solver_options: dict | None = None):
        self.zeta = None if zeta is None else check_number("dps", "zeta", zeta, 0)
        if not isinstance(solver, str):
            raise TypeError(f"dps: solver must be a solver name (diffsolve.solvers()), got {type(solver).__name__}")
        self.solver, self.clip = solver, check_clip("dps", clip)
        self.solver_options = dict(solver_options or {})

    def run(self, prior, problem: Problem, noise, *, nfe, seeds, cond, progress=False):
        n = math.prod(problem.operator.in_shape)
        zeta = self.zeta if self.zeta is not None else per_family(None, ZETA, problem.operator) * math.sqrt(n / N_PAPER)
        A = problem.operator

        def covector(x0, s):
            # v = -(zeta'/|r|)(N/beta(s)) grad_x0 |r|^2 = (zeta'/|r|)(N/beta(s)) 2 A^T r     [DPS Alg. 1 l.7] as (G1)
            r = problem.residual(x0)
            norm = r.reshape(r.shape[0], -1).norm(dim=1).clamp_min(1e-12)
            w = zeta * N_REF / (norm * beta_of_s(s if isinstance(s, float) else s.to(x0.dtype)))
            return 2 * w.reshape(-1, *[1] * (x0.ndim - 1)) * A.adjoint(r)

        wrapper = VJPGuided(prior, covector, self.clip)  # [DPS Alg. 1 l.4-7]: x0-hat, guided step
        res = run_guided("dps", wrapper, noise, nfe=nfe, seeds=seeds, cond=cond, solver=self.solver,
                         progress=progress, **self.solver_options)
        res.info.update(zeta=zeta)
        return res
