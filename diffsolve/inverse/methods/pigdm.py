"""PiGDM: Pseudoinverse-Guided Diffusion Models (Song, Vahdat, Mardani & Kautz, ICLR 2023).

The paper approximates ``p(x0 | x_t)`` by the Gaussian ``N(x0_hat, r_t^2 I)`` [PiGDM Eq. 5], so
that the measurement given the noisy state is Gaussian too,
``p(meas | x_t) ~ N(A x0_hat, r_t^2 A A^T + sigma_y^2 I)`` [PiGDM Eq. 6], and its score is

    g = ((meas - A x0_hat)^T (r_t^2 A A^T + sigma_y^2 I)^{-1} A  dx0_hat/dx_t)^T           [PiGDM Eq. 7-8]

with ``r_t^2 = sigma_t^2 / (1 + sigma_t^2)`` in the paper's variance-exploding variable
(the posterior variance of x0 under a unit-variance data prior).

Canonical space.  The paper's VE state is our ``y`` (``x_t = x0 + sigma_t eps``), so its
``sigma_t`` is our ``s`` and ``r^2 = s^2 / (1 + s^2)``; in VP terms (``x = alpha y``,
``alpha^2 = 1 / (1 + s^2)``) that is ``r^2 = 1 - alpha^2``.  Eq. 7 with x_t = y is then the score
of p(meas | y) in canonical space, added as ``D' = D + s^2 g`` (DESIGN.md); ``g`` is one
vector-Jacobian product of the covector ``A^T (r^2 A A^T + sigma_y^2 I)^{-1} (meas - A D)``.
With ``A = U diag(sv) V^T`` that covector is ``V diag(sv / (r^2 sv^2 + sigma_y^2)) U^T (meas - A D)``
(no matrix is formed; the residual's part outside the range of U is killed by A^T).
The paper's Alg. 1 weights g by sqrt(alpha_t) on its 100-step DDIM grid (a heuristic
"adaptive weight"); ``scale`` (default 1) multiplies the score as derived instead.

Cost: nfe = forward calls + VJPs = 2 per solver evaluation.

    >>> from diffsolve.inverse import solve_inverse
    >>> from diffsolve.inverse.methods.guidance import demo_problem
    >>> res = solve_inverse(**demo_problem(), method="pigdm", nfe=20, num=4)
    >>> res.nfe, res.info["vjp"]
    (20, 10)
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ...checks import check_number
from ..problem import Problem
from .base import InverseMethod, register
from .guidance import VJPGuided, check_clip, run_guided

__all__ = ["PiGDM"]


@register
class PiGDM(InverseMethod):
    """Pseudoinverse-guided diffusion (Song et al. 2023, Eq. 7-8) as a guidance wrapper.

    Options:
        scale: multiplies the guidance score (default 1.0: Eq. 7 as derived).
        solver: any solver of ours (default ``"ddim"``, the paper's sampler, eta = 0);
            ``solver_options`` are passed to it.
        clip: None (default) or (lo, hi): clamp the guided x0-hat.
    """

    name = "pigdm"
    paper = "Pseudoinverse-Guided Diffusion Models for Inverse Problems (Song et al., ICLR 2023), Eq. 7-8"
    cost = "2 per solver evaluation: 1 forward call + 1 VJP (nfe=N runs N/2 evaluations; N even)"
    needs = ("svd", "vjp")
    default_nfe = 100

    def __init__(self, scale: float = 1.0, solver: str = "ddim", clip: Any = None, solver_options: dict | None = None):
        self.scale = check_number("pigdm", "scale", scale, 0)
        if not isinstance(solver, str):
            raise TypeError(f"pigdm: solver must be a solver name (diffsolve.solvers()), got {type(solver).__name__}")
        self.solver, self.clip = solver, check_clip("pigdm", clip)
        self.solver_options = dict(solver_options or {})

    def run(self, prior, problem: Problem, noise, *, nfe, seeds, cond, progress=False):
        A = problem.operator
        svd = A.require_svd("pigdm")
        n_in = math.prod(A.in_shape)
        var_y = problem.sigma_y**2

        def covector(x0, s):
            s2 = s * s if isinstance(s, float) else s.to(x0.dtype)[:, None] ** 2
            r2 = s2 / (1 + s2)                                           # r_t^2 = s^2/(1+s^2)  [PiGDM Eq. 5]
            sv = svd.sv.to(x0.dtype)
            coef = sv / (r2 * sv**2 + var_y)                             # (r^2 A A^T + sigma_y^2)^-1 A  [PiGDM Eq. 7]
            z = torch.zeros(x0.shape[0], n_in, dtype=x0.dtype, device=x0.device)
            z[:, : svd.rank] = coef * svd.Ut(problem.residual(x0))       # ... in the SVD basis
            return self.scale * svd.V(z)                                 # A^T (...)^-1 (meas - A x0_hat)

        wrapper = VJPGuided(prior, covector, self.clip)                  # D' = D + s^2 J^T v  [PiGDM Eq. 8]
        res = run_guided("pigdm", wrapper, noise, nfe=nfe, seeds=seeds, cond=cond, solver=self.solver,
                         progress=progress, **self.solver_options)
        res.info.update(scale=self.scale)
        return res
