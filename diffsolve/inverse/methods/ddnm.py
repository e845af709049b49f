"""DDNM and DDNM+: zero-shot restoration by range-null space decomposition (Wang, Yu & Zhang,
ICLR 2023).

**DDNM** (noiseless measurements).  Any x with ``A x = y`` is ``A^+ y + (I - A^+ A) x``: the
range part is fixed by the measurement, the null-space part is free.  DDNM replaces the
denoised estimate of each step by [DDNM Eq. 13, Alg. 1 line 4]

    x0' = A^+ y + (I - A^+ A) x0  =  x0 + A^+ (y - A x0)

and takes the usual sampler step from it [DDNM Alg. 1 line 5].  That is a denoiser wrapper
(:class:`RangeNullDenoiser`) under any of our solvers; the default is the paper's DDIM step
with eta = 0.85 (``ddim-eta``).  With a noisy measurement the correction copies the noise into
the sample, amplified by ``1 / sv`` on weak singular directions: use DDNM+.

**DDNM+** (noisy measurements, sigma_y > 0).  In the spectral coordinates of
``A = U diag(sv) V^T`` the correction is scaled and the step's fresh noise reduced so that the
measurement noise carried in by the correction plus the fresh noise has exactly the step's
variance [DDNM Eq. 17-19]. Write the ancestral step s -> s' (:func:`ancestral_levels`) as
``y' = a x0 + (1 - a) y + sigma z`` with ``a = 1 - s_down / s`` and ``sigma = s_up``; with
``n_i = sigma_y / sv_i``:

    x0'   = x0 + V Lambda V^T A^+ (y - A x0)                                   [DDNM Eq. 17]
    y'    = DDIM mean from x0'  +  V Gamma^(1/2) V^T z                         [DDNM Eq. 18]
    lambda_i = 1,                 gamma_i = sigma^2 - (a n_i)^2   if sigma >= a n_i   [DDNM Eq. 19]
    lambda_i = sigma / (a n_i),   gamma_i = 0                     otherwise
    (null space: the correction is zero there, gamma_i = sigma^2)

At sigma_y = 0 every lambda is 1 and every gamma is sigma^2: DDNM+ is DDNM.  The optional
"time-travel" of the paper (Sec. 3.4) is not implemented.

    >>> import torch, diffsolve
    >>> from diffsolve.inverse import LinearOperator, solve_inverse
    >>> g = diffsolve.exact_model("gmm-2d")
    >>> A = LinearOperator(torch.tensor([[0.6, 0.8]], dtype=torch.float64), (2,))
    >>> res = solve_inverse(g, A, torch.tensor([[0.5]], dtype=torch.float64), 0.0, method="ddnm", nfe=10, num=3)
    >>> res.nfe, A(res.samples).sub(0.5).abs().max().item() < 1e-12
    (10, True)
    >>> solve_inverse(g, A, torch.tensor([[0.5]], dtype=torch.float64), 0.1, method="ddnm+", nfe=10, num=3).nfe
    10
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from ...checks import check_choice, check_number
from ...denoisers import DenoiserWrapper
from ...sample import sample
from ...schedules import SCHEDULES
from ...solvers.base import SolverState, get_solver
from ...solvers.euler import ddim_update
from ...solvers.stochastic import DDIMEta, ancestral_levels
from ..problem import Problem
from .base import InverseMethod, register
from .spectral import Spectral

__all__ = ["DDNM", "DDNMPlus", "RangeNullDenoiser", "DDNMPlusStep", "range_null_correction"]


def range_null_correction(sp: Spectral, problem: Problem, x0: Tensor, lam: Tensor | float = 1.0) -> Tensor:
    """x0 + V diag(lam) V^T A^+ (y - A x0) [DDNM Eq. 13] (lam = 1) and [DDNM Eq. 17]; note that
    V^T A^+ r = diag(sv)^+ U^T r is :meth:`Spectral.ybar` of the residual r."""
    return x0 + sp.back(lam * sp.ybar(problem.residual(x0)))


class RangeNullDenoiser(DenoiserWrapper):
    """The prior's denoiser with DDNM's range-null space correction [DDNM Eq. 13]."""

    def __init__(self, inner, spectral: Spectral, problem: Problem):
        super().__init__(inner)
        self.sp, self.problem = spectral, problem

    def denoise(self, y, s, **cond):
        return range_null_correction(self.sp, self.problem, self.inner(y, s, **cond))


class DDNMPlusStep(DDIMEta):
    """DDIM-eta step from DDNM+'s scaled correction with reduced fresh noise [DDNM Eq. 17-19]
    (not registered: built per problem by :class:`DDNMPlus`). One call per step."""

    name = "ddnm+"
    paper = "DDNM+ (Wang et al. 2023), Eq. 17-19"

    def __init__(self, spectral: Spectral, problem: Problem, eta: float):
        super().__init__(eta=eta)
        self.sp, self.problem = spectral, problem
        self.nl = spectral.noise_level(problem.sigma_y)  # n_i = sigma_y / sv_i (inf on the null space)

    def step(self, state: SolverState, denoise) -> SolverState:
        i, y, s, s1 = state.i, state.y, state.s, state.s_next
        d = denoise(y, s)
        s_down, sigma = ancestral_levels(s, s1, self.eta)
        a = 1 - s_down / s                                     # weight of x0 in the step's mean
        an, measured = a * self.nl.to(y), self.sp.measured.to(y.device)
        full = (sigma >= an) | ~measured
        lam = torch.where(full, torch.ones_like(an), sigma / an.clamp_min(1e-300))        # [DDNM Eq. 19]
        gamma = torch.where(~measured, torch.full_like(an, sigma * sigma),
                            torch.where(full, (sigma * sigma - an * an).clamp_min(0), torch.zeros_like(an)))
        x0 = range_null_correction(self.sp, self.problem, d, lam)                          # [DDNM Eq. 17]
        y_next = ddim_update(y, x0, s, s_down)                                              # [DDNM Eq. 18] mean
        if sigma > 0:
            z = self.sp.to(state.noise.normal(step=i, like=y))
            y_next = y_next + self.sp.back(torch.sqrt(gamma) * z)                          # [DDNM Eq. 18] Phi_t
        return state.replace(y=y_next, i=i + 1, x0=d)

    def grid_warning(self, grid):
        return DDIMEta(eta=self.eta).grid_warning(grid)  # the same levels as the plain DDIM-eta step


def _eta(owner: str, eta: float) -> float:
    return check_number(owner, "eta", eta, 0, 1)


def _schedule(owner: str, schedule: str) -> str:
    return check_choice(owner, "schedule", schedule, tuple(SCHEDULES))


@register
class DDNM(InverseMethod):
    """DDNM (Wang et al. 2023) for noiseless measurements (on a noisy one it copies the noise
    into the samples: use ``ddnm+``). Options (one setting for every task in the paper's code):

    * ``eta`` (default 0.85): DDIM's stochasticity, in [0, 1];
    * ``solver`` (default ``"ddim-eta"``; any name of ``diffsolve.solvers()``): the step taken
      from the corrected estimate; ``eta`` is passed to it only when it is ``ddim-eta``;
    * ``schedule`` (default ``"karras"``).
    """

    name = "ddnm"
    paper = "Zero-Shot Image Restoration Using Denoising Diffusion Null-Space Model (Wang et al. 2023), Eq. 13, Alg. 1"
    cost = "1 network call per step (the solver's own rule)"
    needs = ("svd",)

    def __init__(self, eta: float = 0.85, solver: str = "ddim-eta", schedule: str = "karras"):
        self.eta, self.schedule = _eta(self.name, eta), _schedule(self.name, schedule)
        self.solver = get_solver(solver).name  # refuses an unknown name, listing the accepted ones

    def run(self, prior, problem, noise, *, nfe, seeds, cond, progress=False):
        op = problem.operator
        spectral = Spectral(op.require_svd(self.name), op.in_shape)
        if problem.sigma_y > 0:
            warnings.warn(f"ddnm: sigma_y={problem.sigma_y} > 0, but DDNM fits the measurement exactly and copies "
                          f"its noise into the samples (amplified by 1/sv on weak directions); use method='ddnm+'",
                          UserWarning, stacklevel=3)
        wrapped = RangeNullDenoiser(prior, spectral, problem)
        opts = {"eta": self.eta} if self.solver == "ddim-eta" else {}
        res = sample(wrapped, noise, solver=self.solver, nfe=nfe, schedule=self.schedule, seeds=seeds, cond=cond,
                     progress=progress, **opts)
        res.info.update(eta=self.eta)
        return res


@register
class DDNMPlus(InverseMethod):
    """DDNM+ (Wang et al. 2023, Eq. 17-19): DDNM with the measurement noise accounted for.
    Options: ``eta`` (default 0.85, in [0, 1]), ``schedule`` (default ``"karras"``)."""

    name = "ddnm+"
    paper = "Zero-Shot Image Restoration Using Denoising Diffusion Null-Space Model (Wang et al. 2023), Eq. 17-19"
    cost = "1 network call per step"
    needs = ("svd",)

    def __init__(self, eta: float = 0.85, schedule: str = "karras"):
        self.eta, self.schedule = _eta(self.name, eta), _schedule(self.name, schedule)

    def run(self, prior, problem, noise, *, nfe, seeds, cond, progress=False):
        op = problem.operator
        step = DDNMPlusStep(Spectral(op.require_svd(self.name), op.in_shape), problem, self.eta)
        res = sample(prior, noise, solver=step, nfe=nfe, schedule=self.schedule, seeds=seeds, cond=cond,
                     progress=progress)
        res.info.update(eta=self.eta)
        return res
