"""SDE-DPM-Solver++(2M) and (3M): multistep solvers of the reverse diffusion SDE in data-prediction
form (Lu et al. 2022, "DPM-Solver++", the SDE variant of its multistep method; the form of
diffusers' ``DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++")``).

In canonical space (y = x/alpha, s = sigma/alpha, lambda = -log s) the reverse SDE (Song et al.
2021, eq. 6) of y = x0 + s eps is dy = 2 (y - D)/s ds + sqrt(2 s) dW_bar (see
:mod:`.stochastic`, (E1)).  In lambda (ds = -s dlambda) its drift is 2 (D - y), and the
variation-of-constants formula over one step h = lambda_{i+1} - lambda_i gives

    y_{i+1} = e^{-2h} y_i + int_0^h 2 e^{-2(h - tau)} D(lambda_i + tau) dtau
              + s_{i+1} sqrt(1 - e^{-2h}) z,                                              (S1)

the noise term being exact: int e^{-4(lambda_{i+1} - lambda)} 2 s^2 dlambda = s_{i+1}^2 (1 - e^{-2h}).

Substituting mu = 2 lambda (i.e. levels s -> s^2) turns the drift integral into

    int_0^{2h} e^{-(2h - u)} D dmu = the probability-flow integral of DPM-Solver++ on the grid s^2,

so the deterministic part of (S1) is *exactly* the deterministic DPM-Solver++ multistep update
(:func:`.dpmpp.dpmpp_multistep_update`) applied on the squared levels: step sizes 2h, divided
differences of D at the same points (their ratios r_k = h_{i-k}/h_i are unchanged).  Hence:

* first order: y' = (s'/s)^2 y + (1 - e^{-2h}) D + s' sqrt(1 - e^{-2h}) z               (S2)
* 2M (midpoint, diffusers' default ``solver_type``):
  y' = (s'/s)^2 y + (1 - e^{-2h}) (D_i + D1/2) + noise,  D1 = (D_i - D_{i-1})/r_0          (S3)
* 3M: y' = (S2) + phi_2(2h) D1 - w phi_3(2h) D2 with the 3M divided differences D1 ~ h D',
  D2 ~ h^2 D''/2 and phi_2(H) = expm1(-H)/H + 1, phi_3 = phi_2/H - 1/2.                   (S4)

Variants of the third-order term (option ``variant`` of ``sde-dpm++3m``):

* ``"reference"`` (default; w = 1): the coefficient of Lu et al.'s deterministic 3M code, which
  k-diffusion's ``dpmpp_3m_sde`` also uses, and the same choice as ``dpm++3m``'s default.  It
  integrates only half the D'' term of the quadratic interpolant (globally second order in the
  drift, see :mod:`.dpmpp`).
* ``"taylor"`` (w = 2): the exact integral of the quadratic interpolant of D in lambda
  (third order in the drift).
* ``"diffusers"``: diffusers 0.42's ``sde-dpmsolver++`` third-order branch, whose D2 coefficient
  is (1 - e^{-2h} - 2h)/(2h)^2 - 1/2 = -phi_3(2h) - 1, i.e. the reference step minus D2: the
  coefficient tends to -1 instead of 0 as h -> 0 (a sign slip in the constant), which leaves a
  local drift error of order h^2.  Kept only to reproduce that scheduler step for step.

Step-order semantics as diffusers (:func:`.dpmpp.multistep_order`): warm-up min(order, i + 1);
with ``lower_order_final`` (default True) runs of fewer than 15 steps lower the order of their
last steps; the step into s = 0 is the deterministic first-order limit y' = D (no noise).

Example::

    >>> import torch, diffsolve
    >>> g = diffsolve.exact_model("gmm-2d")
    >>> noise = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> res = diffsolve.sample(g, noise, solver="sde-dpm++2m", nfe=12, seeds=[5, 6, 7, 8])
    >>> res.nfe, bool(torch.isfinite(res.samples).all())
    (12, True)
    >>> diffsolve.sample(g, noise, solver="sde-dpm++3m", nfe=12, seeds=[5, 6, 7, 8], variant="taylor").nfe
    12
"""

from __future__ import annotations

import math
from typing import Sequence

from torch import Tensor

from .base import Solver, SolverState, register
from .dpmpp import dpmpp_multistep_update
from .kit import check_choice, check_lower_order_final, multistep_order, step_size

__all__ = ["SDEDPMSolverPP2M", "SDEDPMSolverPP3M", "sde_dpmpp_update"]

#: variant -> (weight w of the - phi_3 D2 term, global order of the drift); "diffusers": see below
VARIANTS = {"reference": (1.0, 2), "taylor": (2.0, 3), "diffusers": (None, 1)}


def sde_dpmpp_update(y: Tensor, s: float, s_next: float, d: Tensor, history: tuple[Tensor, ...],
                     past_levels: Sequence[float], order: int, z: Tensor, variant: str = "reference") -> Tensor:
    """One SDE-DPM-Solver++ multistep update of the given order from s to s_next > 0, eq. (S1)-(S4).

    ``history`` holds the denoised outputs at ``past_levels`` (most recent last), ``d`` the one at
    ``s``; ``z`` is the standard normal noise of this step.
    """
    h = step_size(s, s_next)
    w = VARIANTS[variant][0]
    if w is None:  # "diffusers": the D2 coefficient -phi_3(2h) - 1 = -w phi_3(2h) at order 3
        H = 2 * h
        phi_3 = (math.expm1(-H) / H + 1) / H - 0.5
        w = 1.0 + 1.0 / phi_3 if order == 3 else 1.0
    # the drift of (S1) is DPM-Solver++ [DPM-Solver++ Alg. 2 / 3M] on the squared levels (mu = 2 lambda)
    y_next = dpmpp_multistep_update(y, s * s, s_next * s_next, d, history, [v * v for v in past_levels], order, w)
    noise_level = s_next * math.sqrt(-math.expm1(-2 * h))   # (S1): s' sqrt(1 - e^{-2h})
    return y_next + noise_level * z


class _SDEDPMSolverPP(Solver):
    """Shared step of SDE-DPM-Solver++(kM); subclasses fix the maximal order."""

    max_order: int = 2
    stochastic = True

    def __init__(self, lower_order_final: bool = True, variant: str = "reference"):
        self.lower_order_final = check_lower_order_final(lower_order_final, self.owner)
        self.variant = check_choice(self.owner, "variant", variant, tuple(VARIANTS))

    def step(self, state: SolverState, denoise) -> SolverState:
        i, y, at = state.i, state.y, state.at
        s, s_next = at(i), at(i + 1)
        d = denoise(y, s)
        to_zero = s_next == 0
        k = multistep_order(i, state.n_steps, self.max_order, self.lower_order_final, to_zero)
        if to_zero:
            y_next = d  # the deterministic limit of (S2) at s' = 0 (as [DPM-Solver++ Eq. 8] at h = inf)
        else:
            z = state.noise.normal(step=i, like=y, draw=0)
            past = [at(j) for j in range(max(i - k + 1, 0), i)]
            y_next = sde_dpmpp_update(y, s, s_next, d, state.history, past, k, z, self.variant)
        return state.replace(y=y_next, i=i + 1, history=self.push(state.history, d, self.max_order - 1), x0=d)


@register
class SDEDPMSolverPP2M(_SDEDPMSolverPP):
    """SDE-DPM-Solver++(2M), midpoint form (S3).  Options: ``lower_order_final`` (bool, default
    True).  One evaluation per step."""

    name = "sde-dpm++2m"
    aliases = ("sde-dpmpp-2m", "dpmpp_2m_sde", "sde-dpmsolver++2m")
    order = 2
    max_order = 2
    paper = "DPM-Solver++ (Lu et al. 2022), SDE variant of Algorithm 2 (diffusers sde-dpmsolver++, midpoint)"

    def __init__(self, lower_order_final: bool = True):
        super().__init__(lower_order_final, "reference")


@register
class SDEDPMSolverPP3M(_SDEDPMSolverPP):
    """SDE-DPM-Solver++(3M), eq. (S4).  Options: ``lower_order_final`` (bool, default True),
    ``variant`` (``"reference"`` default, ``"taylor"``, ``"diffusers"``; see the module docstring).
    One evaluation per step.  The instance's ``order`` (of the drift) is its variant's (VARIANTS)."""

    name = "sde-dpm++3m"
    aliases = ("sde-dpmpp-3m", "sde-dpmsolver++3m")
    order = 2  # of the drift, default "reference" variant (VARIANTS)
    max_order = 3
    paper = "DPM-Solver++ (Lu et al. 2022), SDE variant of the third-order multistep method"

    def __init__(self, lower_order_final: bool = True, variant: str = "reference"):
        super().__init__(lower_order_final, variant)
        self.order = VARIANTS[variant][1]
