"""Multistep DPM-Solver++ in data-prediction form (Lu et al. 2022, "DPM-Solver++: Fast Solver for
Guided Sampling of Diffusion Probabilistic Models").

In canonical space (divide the paper's x by alpha) the exact solution of the probability-flow
ODE from level s_i to s_{i+1} (the variation-of-constants formula, DPM-Solver++ Sec. 4) is

    y_{i+1} = (s_{i+1}/s_i) y_i + int_0^h e^{-(h - tau)} D(lambda_i + tau) dtau,
    h = lambda_{i+1} - lambda_i,   lambda = -log s,

and the first-order update ([DPM-Solver++ Eq. 8], D held constant) is

    y_{i+1} = (s_{i+1}/s_i) y_i - expm1(-h) D_i.

Expanding D in a Taylor series around lambda_i (DPM-Solver, Appendix B, with the phi-functions)
gives, with phi_1 = expm1(-h), phi_2 = phi_1/h + 1, phi_3 = phi_2/h - 1/2,

    int_0^h e^{-(h-tau)} tau^k/k! dtau  =  -phi_1,  h phi_2,  -h^2 phi_3     (k = 0, 1, 2),

so that

    y_{i+1} = (s_{i+1}/s_i) y_i - phi_1 D_i + phi_2 (h D') - phi_3 (h^2 D'')           (*)

The multistep methods estimate the derivatives from the last denoised outputs (divided
differences in lambda with r_k = h_{i-k}/h_i):

* 2M [DPM-Solver++ Alg. 2]: D1 = (D_i - D_{i-1})/r_0 ~ h D', used in the midpoint form
  ``D_i + D1/2`` (diffusers' ``solver_type="midpoint"``, the paper's algorithm).
* 3M: D1_0 = (D_i - D_{i-1})/r_0, D1_1 = (D_{i-1} - D_{i-2})/r_1,
  D1 = D1_0 + r_0/(r_0 + r_1) (D1_0 - D1_1)  ~ h D' (second-order accurate),
  D2 = (D1_0 - D1_1)/(r_0 + r_1)             ~ h^2 D''/2.

  The reference implementation (Lu et al.'s code, diffusers' ``DPMSolverMultistepScheduler``
  and k-diffusion's ``dpmpp_3m_sde`` at eta=0) uses ``- phi_3 D2``: half the D'' term of (*).
  The local error then keeps a term h^3 D''/12, so the method is globally *second* order,
  with a smaller constant than 2M (measured: slope 2 on the exact mixtures, see
  tests/test_convergence_multistep.py).  ``variant="taylor"`` (the default) uses the full
  ``- 2 phi_3 D2`` of (*) and is third order; ``variant="reference"`` reproduces the reference
  code step for step (for comparisons with diffusers).

Step-order semantics (as diffusers, so that runs agree step for step):

* warm-up: step i uses order min(order, i + 1) (only i earlier outputs exist);
* ``lower_order_final`` (default True) on runs of fewer than 15 steps: the last step is first
  order and the second-to-last at most second order (i.e. order <= n_steps - i);
* any step to s = 0 (h = inf) is the first-order limit y_{i+1} = D_i.

Example: the two 3M variants differ only from the first order-3 step on::

    >>> import torch, diffsolve
    >>> z = torch.randn(8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> run = lambda v: diffsolve.sample(diffsolve.exact_model("gmm-2d"), z, solver="dpm++3m", nfe=10,
    ...                                  variant=v, return_trajectory=True).trajectory
    >>> [bool(torch.equal(a, b)) for a, b in zip(run("taylor"), run("reference"))][:5]
    [True, True, True, False, False]
"""

from __future__ import annotations

import math
from typing import Sequence

from torch import Tensor

from .base import Solver, SolverState, register
from .euler import ddim_update
from .kit import check_choice, check_lower_order_final, multistep_order, step_size

__all__ = ["DPMSolverPP2M", "DPMSolverPP3M", "multistep_order", "check_lower_order_final", "dpmpp_multistep_update"]


def dpmpp_multistep_update(y: Tensor, s: float, s_next: float, d: Tensor, history: tuple[Tensor, ...],
                           past_levels: Sequence[float], order: int, d2_weight: float = 1.0) -> Tensor:
    """One DPM-Solver++ multistep update of the given order from s to s_next > 0.

    ``history`` holds the denoised outputs at ``past_levels`` (most recent last), ``d`` the one
    at s.  ``d2_weight`` multiplies the third-order term ``- phi_3 D2`` (1: reference code,
    2: the full Taylor coefficient of (*)).  Levels are Python floats (0-dim CPU tensors and a
    1-D CPU tensor of past levels are read as floats): every coefficient is computed in Python floats and the update is one linear combination of
    y, D_i, D_{i-1}, D_{i-2} (no per-step scalar tensors).
    """
    s, s_next = float(s), float(s_next)
    past = [float(v) for v in past_levels]
    h = step_size(s, s_next)
    phi_1 = math.expm1(-h)
    a = s_next / s
    if order == 1:  # [DPM-Solver++ Eq. 8]: y' = (s'/s) y - phi_1 D_i
        return y * a - phi_1 * d
    r0 = step_size(past[-1], s) / h  # r_0 = h_{i-1} / h_i
    # D1_0 = (D_i - D_{i-1}) / r0, written as coefficients on (D_i, D_{i-1}, D_{i-2})
    d1_0 = (1 / r0, -1 / r0, 0.0)
    if order == 2:  # [DPM-Solver++ Alg. 2] (midpoint form): D_i + D1_0 / 2 in place of D_i
        c = [-phi_1 * (e + 0.5 * f) for e, f in zip((1.0, 0.0, 0.0), d1_0)]
    else:
        r1 = step_size(past[-2], past[-1]) / h  # r_1 = h_{i-2} / h_i
        d1_1 = (0.0, 1 / r1, -1 / r1)  # (D_{i-1} - D_{i-2}) / r1
        diff = [u - v for u, v in zip(d1_0, d1_1)]
        d1 = [u + (r0 / (r0 + r1)) * v for u, v in zip(d1_0, diff)]
        d2 = [v / (r0 + r1) for v in diff]
        phi_2 = phi_1 / h + 1
        phi_3 = phi_2 / h - 0.5
        # (*) with the estimated derivatives: - phi_1 D_i + phi_2 D1 - w phi_3 D2
        c = [-phi_1 * e + phi_2 * u - d2_weight * phi_3 * v for e, u, v in zip((1.0, 0.0, 0.0), d1, d2)]
    out = (y * a).add_(d, alpha=c[0]).add_(history[-1], alpha=c[1])
    if order >= 3:
        out.add_(history[-2], alpha=c[2])
    return out


class _DPMSolverPPMultistep(Solver):
    """Shared step of DPM-Solver++(kM); subclasses fix the maximal order."""

    max_order: int = 2
    d2_weight: float = 1.0
    paper = "DPM-Solver++ (Lu et al. 2022), Algorithm 2 and its third-order multistep extension"
    default_schedule = "karras"

    def __init__(self, lower_order_final: bool | str = True):
        self.lower_order_final = check_lower_order_final(lower_order_final, self.owner)

    def step(self, state: SolverState, denoise) -> SolverState:
        i, y = state.i, state.y
        s, s_next = state.at(i), state.at(i + 1)
        d = denoise(y, s)
        k = multistep_order(i, state.n_steps, self.max_order, self.lower_order_final, s_next == 0)
        if k == 1:  # [DPM-Solver++ Eq. 8], and the exact limit y_{i+1} = D_i at s = 0
            y_next = ddim_update(y, d, s, s_next)
        else:
            past = [state.at(j) for j in range(max(i - k + 1, 0), i)]
            y_next = dpmpp_multistep_update(y, s, s_next, d, state.history, past, k, self.d2_weight)
        return state.replace(y=y_next, i=i + 1, history=self.push(state.history, d, self.max_order - 1), x0=d)


@register
class DPMSolverPP2M(_DPMSolverPPMultistep):
    """DPM-Solver++(2M): second-order multistep, one evaluation per step (Algorithm 2)."""

    name = "dpm++2m"
    aliases = ("dpmpp_2m", "dpm-solver++2m")
    order = 2
    max_order = 2
    paper = "DPM-Solver++ (Lu et al. 2022), Algorithm 2"


@register
class DPMSolverPP3M(_DPMSolverPPMultistep):
    """DPM-Solver++(3M): multistep with a quadratic extrapolation of the denoised outputs.

    Options: ``lower_order_final`` (bool, default True); ``variant``: ``"taylor"`` (default, the
    full third-order Taylor coefficient) or ``"reference"`` (the coefficients of Lu et al.'s code
    and diffusers: globally second order).  The instance's ``order`` is that of its variant.
    """

    name = "dpm++3m"
    aliases = ("dpmpp_3m", "dpm-solver++3m")
    order = 3  # of the default "taylor" variant (VARIANTS)
    max_order = 3
    stability_advice = ("measured on the exact mixtures: samples up to 7x the data's RMS on time grids (edm, nfe=21) "
                        "and 2.3x at nfe=9 (karras, flow); dpm++2m stayed within 1.9x on every grid measured")
    paper = "DPM-Solver++ (Lu et al. 2022), multistep third order (reference code / diffusers)"
    #: variant -> (weight of the - phi_3 D2 term, global order measured on the exact mixtures)
    VARIANTS = {"reference": (1.0, 2), "taylor": (2.0, 3)}

    def __init__(self, lower_order_final: bool | str = True, variant: str = "taylor"):
        super().__init__(lower_order_final)
        self.variant = check_choice(self.owner, "variant", variant, tuple(self.VARIANTS))
        self.d2_weight, self.order = self.VARIANTS[variant]
