"""Classic fourth-order Runge-Kutta on the probability-flow ODE in lambda = -log s.

With s = exp(-lambda) the canonical ODE dy/ds = (y - D)/s becomes

    dy/dlambda = D(y, exp(-lambda)) - y

which is smooth in lambda; RK4 (Kutta 1901) on it serves as the high-accuracy reference
against which the fast solvers' convergence orders are measured.  A step to s = 0 (lambda =
inf) is the first-order denoising limit.
"""

from __future__ import annotations

import torch

from .base import register
from .euler import SingleStepSolver


@register
class RK4(SingleStepSolver):
    name = "rk4"
    order = 4
    paper = "classic Runge-Kutta (Kutta 1901) in lambda = log-SNR/2 (reference solver)"
    nfe_rule = "4 per step, 1 for a final step to s=0"
    evals_per_step = 4
    default_schedule = "log-snr"

    def update(self, y, s, s_next, denoise):
        lam, lam_next = -torch.log(s), -torch.log(s_next)
        h = lam_next - lam
        s_mid = torch.exp(-(lam + h / 2))

        def f(yy, ss):
            return denoise(yy, ss) - yy

        k1 = f(y, s)
        k2 = f(y + (h / 2) * k1, s_mid)
        k3 = f(y + (h / 2) * k2, s_mid)
        k4 = f(y + h * k3, s_next)
        return y + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
