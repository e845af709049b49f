"""EDM's second-order Heun step (Karras et al. 2022, Algorithm 1, deterministic: S_churn = 0).

    d_i  = (y_i - D(y_i, s_i)) / s_i                          (line 7)
    y'   = y_i + (s_{i+1} - s_i) d_i                          (line 8, Euler predictor)
    d'_i = (y' - D(y', s_{i+1})) / s_{i+1}                    (line 10)
    y_{i+1} = y_i + (s_{i+1} - s_i) (d_i + d'_i) / 2          (line 11, trapezoid)

The correction is skipped on the step to s = 0 (line 9), so N steps to zero cost 2N - 1
evaluations: budgets are odd.
"""

from __future__ import annotations

from .base import bc, register
from .euler import SingleStepSolver


def heun_update(y, s, s_next, denoise):
    """One Heun step from s to s_next > 0 (two evaluations)."""
    d = (y - denoise(y, s)) / bc(s, y)
    y_pred = y + bc(s_next - s, y) * d
    d_next = (y_pred - denoise(y_pred, s_next)) / bc(s_next, y)
    return y + bc(s_next - s, y) * (d + d_next) / 2


@register
class Heun(SingleStepSolver):
    name = "heun"
    aliases = ("edm-heun",)
    order = 2
    paper = "Elucidating the Design Space of Diffusion-Based Generative Models (Karras et al. 2022), Alg. 1"
    nfe_rule = "2 per step, 1 for a final step to s=0 (2N-1 for N steps to zero)"
    evals_per_step = 2

    def update(self, y, s, s_next, denoise):
        return heun_update(y, s, s_next, denoise)
