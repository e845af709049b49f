"""Stochastic samplers in canonical space: DDIM with eta / DDPM, Euler ancestral, Euler-Maruyama on
the reverse SDE, and EDM's churn sampler.  (SDE-DPM-Solver++ lives in :mod:`.sde_dpmpp`.)

Canonical variables as everywhere: ``y = x / alpha``, ``s = sigma / alpha``, so that a noised
sample is ``y = x0 + s eps`` and the denoiser is ``D(y, s) = E[x0 | y]``.  Fresh noise comes from
the counter-based ``state.noise`` (one standard normal per sample, step and draw index), so a
sample's trajectory depends only on its own seed, never on the batch around it.

**DDIM with eta** (Song et al. 2021, eq. 12 and 16).  On a VP path (alpha^2 + sigma^2 = 1) the
DDIM step from t to t-1 is

    x_{t-1} = alpha_{t-1} x0_hat + sqrt(1 - alpha_{t-1}^2 - sigma_eta^2) eps_hat + sigma_eta z  (eq. 12)
    sigma_eta = eta sqrt((1 - alpha_{t-1}^2)/(1 - alpha_t^2)) sqrt(1 - alpha_t^2/alpha_{t-1}^2)  (eq. 16)

With alpha^2 = 1/(1 + s^2), sigma = s alpha, write s = s_i, s' = s_{i+1}:

    1 - alpha_t^2/alpha_{t-1}^2 = (s^2 - s'^2)/(1 + s^2),
    (1 - alpha_{t-1}^2)/(1 - alpha_t^2) = s'^2 (1 + s^2) / (s^2 (1 + s'^2)),

so sigma_eta^2 = eta^2 s'^2 (s^2 - s'^2) / (s^2 (1 + s'^2)).  Dividing eq. 12 by alpha_{t-1}
(1/alpha_{t-1}^2 = 1 + s'^2) gives the canonical step

    s_up   = eta s' sqrt(1 - s'^2/s^2)              (= sigma_eta / alpha_{t-1})          (A1)
    s_down = sqrt(s'^2 - s_up^2)                     (= sqrt(1 - alpha_{t-1}^2 - sigma_eta^2) / alpha_{t-1})
    y'     = D + s_down (y - D)/s + s_up z           (eps_hat = (y - D)/s)                 (A2)

i.e. the deterministic DDIM/Euler step to the level s_down followed by fresh noise of level s_up.
At eta = 1, s_down = s'^2/s and (A2) is exactly DDPM's ancestral step (Ho et al. 2020, eq. 6-7):
the posterior q(x_{t-1} | x_t, x0) of the DDPM chain restricted to the grid, with
beta_t = 1 - alpha_t^2/alpha_{t-1}^2 and variance beta~_t = (1 - abar_{t-1})/(1 - abar_t) beta_t
= sigma_eta^2 (checked numerically in tests/test_stochastic.py on a DDPM table).  At eta = 0 it is
DDIM.

**Euler ancestral** (k-diffusion's ``sample_euler_ancestral``) is the same step written in VE
variables: s_up = min(s', eta sqrt(s'^2 (s^2 - s'^2)/s^2)), s_down = sqrt(s'^2 - s_up^2), an Euler
step to s_down and s_up fresh noise: (A1)-(A2) with the clamp s_up <= s' (which binds only for
eta > 1; then s_down = 0 and the step is y' = D + s' z).  So ``euler-a`` and ``ddim-eta``
coincide up to the ``s_noise`` scale of the fresh noise; both are kept under their usual names.

**Euler-Maruyama** on the reverse SDE (Song et al. 2021, "Score-Based Generative Modeling
through SDEs", eq. 6; tagged [Score SDE Eq. 6]).  In canonical variables the forward process y = x0 + s eps is the
driftless SDE dy = g dW with g^2 = d(s^2)/ds = 2 s (time = s).  Its reverse (eq. 6 with f = 0) is

    dy = -g^2 grad log p_s(y) ds + g dW_bar = 2 (y - D)/s ds + sqrt(2 s) dW_bar,           (E1)

using grad log p_s(y) = (D - y)/s^2, run with ds < 0.  The Euler-Maruyama step from s to s' is

    y' = y + 2 (s' - s)/s (y - D) + sqrt(2 s (s - s')) z.                                   (E2)

The step into s = 0 is by default the denoising limit y' = D (``denoise_final=True``); with
``denoise_final=False`` it is (E2) as well.

**EDM's stochastic sampler** (Karras et al. 2022, Algorithm 2): at each level inside
[S_tmin, S_tmax] the level is first raised to s_hat = (1 + gamma) s by adding fresh noise of
variance s_hat^2 - s^2 (lines 4-7, gamma = min(S_churn/N, sqrt(2) - 1), the noise scaled by
S_noise), then a Heun step goes from s_hat to s' (lines 8-11, :func:`.heun.heun_update`), a single
Euler step when s' = 0.  The network is then evaluated at s_hat, which can exceed the grid's first
level (and the path's trained range) when s_0 lies inside [S_tmin, S_tmax]; the driver's
``eval_levels`` records it.

Example::

    >>> import torch, diffsolve
    >>> g = diffsolve.exact_model("gmm-2d")
    >>> noise = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> a = diffsolve.sample(g, noise, solver="ddpm", nfe=20, seeds=[1, 2, 3, 4])
    >>> b = diffsolve.sample(g, noise[2:3], solver="ddpm", nfe=20, seeds=[3])
    >>> a.nfe, torch.equal(a.samples[2:3], b.samples)
    (20, True)
    >>> diffsolve.sample(g, noise, solver="edm-churn", nfe=19, seeds=[1, 2, 3, 4]).nfe
    19
"""

from __future__ import annotations

import math

from .base import Solver, SolverState, register
from .euler import ddim_update
from .heun import heun_update
from .kit import check_bool, check_number

__all__ = ["ancestral_levels", "DDIMEta", "DDPM", "EulerAncestral", "EulerMaruyama", "EDMChurn"]


def ancestral_levels(s: float, s_next: float, eta: float) -> tuple[float, float]:
    """``(s_down, s_up)`` of eq. (A1): the deterministic target level and the fresh-noise level
    of an ancestral step from ``s`` to ``s_next`` (``s_down^2 + s_up^2 = s_next^2``).

    ``s_up = min(s_next, eta s_next sqrt(1 - s_next^2/s^2))``; ``s_down`` is computed as
    ``s_next sqrt(1 - eta^2 + eta^2 s_next^2/s^2)`` (no cancellation at eta = 1, where it is
    ``s_next^2 / s``).

    >>> d, u = ancestral_levels(2.0, 1.0, 1.0)
    >>> d, round(u ** 2, 12)
    (0.5, 0.75)
    """
    s, s_next = float(s), float(s_next)
    r2 = (s_next / s) ** 2
    e2 = eta * eta
    s_up = s_next * math.sqrt(min(e2 * (1 - r2), 1.0))
    s_down = s_next * math.sqrt(max((1 - e2) + e2 * r2, 0.0))
    return s_down, s_up


@register
class DDIMEta(Solver):
    """DDIM with stochasticity eta (Song et al. 2021, eq. 12 and 16), in canonical form (A1)-(A2).

    Options: ``eta`` (float >= 0, default 1.0): 0 is deterministic DDIM, 1 is DDPM's ancestral
    sampler; above 1 the fresh noise is capped at the target level (then y' = D + s' z).
    One evaluation per step.
    """

    name = "ddim-eta"
    aliases = ("ddim_eta",)
    order = 1
    stochastic = True
    paper = "DDIM (Song et al. 2021), eq. 12 and 16; eta=1 is DDPM (Ho et al. 2020), eq. 6-7"
    nfe_rule = "1 per step"
    s_noise: float = 1.0

    def __init__(self, eta: float = 1.0):
        self.eta = check_number(self.owner, "eta", eta, 0)

    def step(self, state: SolverState, denoise) -> SolverState:
        i, y, s, s_next = state.i, state.y, state.s, state.s_next
        d = denoise(y, s)
        s_down, s_up = ancestral_levels(s, s_next, self.eta)
        y_next = ddim_update(y, d, s, s_down)                  # [DDIM Eq. 12] as (A2): deterministic part
        if self.eta > 0 and self.s_noise > 0 and s_next > 0:   # [DDIM Eq. 16] as (A1)-(A2): fresh noise s_up z
            z = state.noise.normal(step=i, like=y, draw=0)
            y_next = y_next + (s_up * self.s_noise) * z
        return state.replace(y=y_next, i=i + 1, x0=d)


@register
class DDPM(DDIMEta):
    """DDPM's ancestral sampler (Ho et al. 2020, eq. 6-7) on any grid: ``ddim-eta`` at eta = 1.
    No options."""

    name = "ddpm"
    aliases = ("ddpm-ancestral",)
    paper = "DDPM (Ho et al. 2020), eq. 6-7 (= DDIM eta=1)"

    def __init__(self):
        super().__init__(eta=1.0)


@register
class EulerAncestral(DDIMEta):
    """Euler ancestral (k-diffusion's ``sample_euler_ancestral``): an Euler step to s_down and
    fresh noise of level s_up, eq. (A1)-(A2).

    Options: ``eta`` (float >= 0, default 1.0), ``s_noise`` (float >= 0, default 1.0: scale of the
    fresh noise).
    """

    name = "euler-a"
    aliases = ("euler_ancestral", "euler-ancestral")
    paper = "k-diffusion sample_euler_ancestral (Crowson); = DDIM eta in canonical space"

    def __init__(self, eta: float = 1.0, s_noise: float = 1.0):
        super().__init__(eta=eta)
        self.s_noise = check_number(self.owner, "s_noise", s_noise, 0)


@register
class EulerMaruyama(Solver):
    """Euler-Maruyama on the reverse-time SDE (Song et al. 2021, eq. 6) in canonical VE
    variables, eq. (E2).

    Options: ``denoise_final`` (bool, default True): the step into s = 0 returns D(y, s) instead of
    an Euler-Maruyama step.  One evaluation per step.  Weak order 1: it needs many steps.
    """

    name = "euler-maruyama"
    aliases = ("em", "euler-maruyama-sde")
    order = 1
    stochastic = True
    paper = "Score-Based Generative Modeling through SDEs (Song et al. 2021), eq. 6, Euler-Maruyama"
    nfe_rule = "1 per step"

    def __init__(self, denoise_final: bool = True):
        self.denoise_final = check_bool(self.owner, "denoise_final", denoise_final)

    def step(self, state: SolverState, denoise) -> SolverState:
        i, y, s, s_next = state.i, state.y, state.s, state.s_next
        d = denoise(y, s)
        if self.denoise_final and s_next == 0:
            return state.replace(y=d, i=i + 1, x0=d)  # the denoising limit of the step into s = 0
        z = state.noise.normal(step=i, like=y, draw=0)
        drift = (2 * (s_next - s) / s) * (y - d)           # [Score SDE Eq. 6] as (E2): -g^2 score ds, g^2 = 2 s
        diffusion = math.sqrt(2 * s * (s - s_next)) * z    # [Score SDE Eq. 6] as (E2): g sqrt(|ds|) z
        return state.replace(y=y + drift + diffusion, i=i + 1, x0=d)


@register
class EDMChurn(Solver):
    """EDM's stochastic sampler (Karras et al. 2022, Algorithm 2): churn, then a Heun step.

    Options (EDM's names): ``S_churn`` (default 40), ``S_tmin`` (0.05), ``S_tmax`` (50),
    ``S_noise`` (1.003).  gamma_i = min(S_churn/N, sqrt(2) - 1) for s_i in [S_tmin, S_tmax], else
    0, with N the number of steps.  Two evaluations per step, one for the step into s = 0.
    """

    name = "edm-churn"
    aliases = ("edm-sde", "edm-stochastic")
    order = 2
    stochastic = True
    paper = "Elucidating the Design Space of Diffusion-Based Generative Models (Karras et al. 2022), Alg. 2"
    nfe_rule = "2 per step, 1 for a final step to s=0 (2N-1 for N steps to zero)"
    evals_per_step = 2

    def __init__(self, S_churn: float = 40.0, S_tmin: float = 0.05, S_tmax: float = 50.0, S_noise: float = 1.003):
        who = self.owner
        self.S_churn = check_number(who, "S_churn", S_churn, 0)
        self.S_tmin = check_number(who, "S_tmin", S_tmin, 0)
        self.S_noise = check_number(who, "S_noise", S_noise, 0)
        self.S_tmax = check_number(who, "S_tmax", S_tmax, 0)
        if self.S_tmax < self.S_tmin:
            raise ValueError(f"{who}: S_tmin={S_tmin!r} and S_tmax={S_tmax!r} are not accepted; "
                             f"accepted: 0 <= S_tmin <= S_tmax (the defaults are 0.05 and 50)")

    def gamma(self, s: float, n_steps: int) -> float:
        """[EDM Alg. 2 l.4]: the churn of a step starting at level s on an n_steps grid."""
        if self.S_tmin <= s <= self.S_tmax:
            return min(self.S_churn / n_steps, math.sqrt(2.0) - 1.0)
        return 0.0

    def step(self, state: SolverState, denoise) -> SolverState:
        i, y, s, s_next = state.i, state.y, state.s, state.s_next
        gamma = self.gamma(s, state.n_steps)                                  # [EDM Alg. 2 l.4]
        s_hat = s * (1.0 + gamma)                                             # [EDM Alg. 2 l.6]
        if gamma > 0 and self.S_noise > 0:
            eps = self.S_noise * state.noise.normal(step=i, like=y, draw=0)   # [EDM Alg. 2 l.5]
            y = y + (s * math.sqrt(gamma * (2.0 + gamma))) * eps              # [EDM Alg. 2 l.7]: sqrt(s_hat^2 - s^2)
        d0 = denoise(y, s_hat)
        if s_next == 0:
            y = ddim_update(y, d0, s_hat, s_next)                             # [EDM Alg. 2 l.8-9] (Euler to 0)
        else:
            y = heun_update(y, s_hat, s_next, d0, denoise)                    # [EDM Alg. 2 l.8-11]
        return state.replace(y=y, i=i + 1, x0=d0)
