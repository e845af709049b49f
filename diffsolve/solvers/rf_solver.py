"""RF-Solver-2 (Wang et al. 2024, "Taming Rectified Flow for Inversion and Editing"), the
second-order Taylor step for the rectified-flow ODE dZ/dt = v(Z, t).

The paper (Sec. "RF-Solver") expands the exact solution of the flow ODE in flow time to second
order:

    Z_{t_{i+1}} = Z_{t_i} + (t_{i+1} - t_i) v(Z_{t_i}, t_i)
                  + 1/2 (t_{i+1} - t_i)^2 v'(Z_{t_i}, t_i) + O(dt^3)            [RF-Solver (T)]

and estimates the time derivative of the velocity by a finite difference at the half step:

    Z_mid = Z_{t_i} + dt/2 v(Z_{t_i}, t_i),   dt = t_{i+1} - t_i,
    v'    ~ (v(Z_mid, t_i + dt/2) - v(Z_{t_i}, t_i)) / (dt/2).                 [RF-Solver (FD)]

(Substituting v' shows that the step equals the explicit midpoint rule in flow time.)

For ANY model, in canonical variables: the flow path alpha = 1 - t, sigma = t has the same
canonical level s = t / (1 - t), so

    t = s / (1 + s),    Z = y / (1 + s),    v = dZ/dt = eps - x0 = (y - D(y, s)) / s - D(y, s)

(differentiate Z = y / (1 + s) along dy/ds = (y - D)/s with ds/dt = (1 + s)^2).  The step is
taken in these variables and mapped back with y = Z (1 + s); no model family is special-cased:
for a VP or EDM model the same step is the RF-Solver step on the flow ODE that shares its
canonical trajectory.  The final step to s = 0 is the first-order limit y = D(y, s) (one
evaluation), which is also Euler in flow time to t = 0.

Example: the second evaluation of a step sits at the midpoint in flow time t = s / (1 + s)::

    >>> import diffsolve
    >>> z = diffsolve.NoiseSource.initial([0, 1], (2,))
    >>> res = diffsolve.sample(diffsolve.exact_model("gmm-2d"), z, solver="rf-solver-2", nfe=9, schedule="log-snr")
    >>> t = [s / (1 + s) for s in res.eval_levels.tolist()]
    >>> res.nfe, round(t[1], 12) == round((t[0] + t[2]) / 2, 12)
    (9, True)
"""

from __future__ import annotations

from torch import Tensor

from .base import register
from .euler import SingleStepSolver
from .kit import eps_of

__all__ = ["RFSolver2", "rf_solver_2_update", "flow_velocity"]


def flow_velocity(y: Tensor, d: Tensor, s: float) -> Tensor:
    """The rectified-flow velocity v = eps - x0 at canonical (y, s) with denoised output d."""
    return eps_of(y, d, s) - d


def rf_solver_2_update(y: Tensor, s: float, s_next: float, d0: Tensor, denoise) -> Tensor:
    """One RF-Solver-2 step from s to s_next > 0, given d0 = D(y, s) (one more evaluation)."""
    t, t_next = s / (1 + s), s_next / (1 + s_next)  # flow time
    dt = t_next - t
    z = y / (1 + s)  # flow state Z = (1 - t) y
    v = flow_velocity(y, d0, s)
    t_mid = t + dt / 2
    s_mid = t_mid / (1 - t_mid)
    z_mid = z + (dt / 2) * v  # [RF-Solver (FD)]: half an Euler step
    y_mid = z_mid * (1 + s_mid)
    v_mid = flow_velocity(y_mid, denoise(y_mid, s_mid), s_mid)
    dv = (v_mid - v) / (dt / 2)  # [RF-Solver (FD)]: finite-difference time derivative of v
    z_next = z + dt * v + (dt**2 / 2) * dv  # [RF-Solver (T)]: second-order Taylor step
    return z_next * (1 + s_next)


@register
class RFSolver2(SingleStepSolver):
    """RF-Solver-2: second-order Taylor step in flow time with a half-step finite difference."""

    name = "rf-solver-2"
    aliases = ("rf_solver_2",)
    order = 2
    paper = "Taming Rectified Flow for Inversion and Editing (Wang et al. 2024), RF-Solver-2"
    evals_per_step = 2
    default_schedule = "flow-shift"

    def update(self, y, s, s_next, d0, denoise):
        return rf_solver_2_update(y, s, s_next, d0, denoise)
