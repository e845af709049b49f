"""DAPS: Decoupled Annealing Posterior Sampling (Zhang, Chu, Berner, Meng, Anandkumar & Song,
"Improving Diffusion Inverse Problem Solving with Decoupled Noise Annealing", CVPR 2025, Alg. 1).

Over a decreasing sequence of annealing levels s_1 > ... > s_N (the paper's sigma_{t_i} of an
EDM/VE path, which is our canonical s: ``x_t = x0 + sigma_t eps`` is ``y = x0 + s eps``):

1. x0-hat by a short probability-flow ODE solve from ``y_i`` at level s_i to 0 (ours:
   ``diffsolve.sample`` with ``y_start = y_i``, ``ode_nfe`` calls)                         [DAPS Alg. 1 l.3]
2. Langevin steps on ``p(x0 | y_i, meas)`` with the Gaussian approximation
   ``p(x0 | y_i) ~ N(x0_hat, r_i^2 I)``, ``r_i = s_i`` (the released code's choice):
   ``x <- x + eta grad [-|x - x0_hat|^2 / (2 r_i^2) - |meas - A x|^2 / (2 tau^2)] + sqrt(2 eta) z``
   started at x0-hat                                                             [DAPS Eq. 9-10, Alg. 1 l.4-6]
3. re-noising to the next level, ``y_{i+1} = x0 + s_{i+1} z``                            [DAPS Alg. 1 l.7]

The output is the last level's Langevin sample.  Langevin makes no network call.

Step size: the paper's ``eta`` is in its [-1, 1] pixel units (1e-4 with tau = 0.01, decayed
linearly to 1% over the levels).  Here ``eta_i = lr / L_i`` with
``L_i = 1 / r_i^2 + |A|^2 / tau^2`` the curvature of the Gaussian target (so lr < 1 is stable
in any units and at any level), times the paper's linear decay to ``lr_min_ratio``.
``tau`` (the likelihood's width) defaults to the measurement's sigma_y (the paper tunes it:
0.01 for sigma_y = 0.05).

Cost: nfe = levels x ode_nfe (``nfe=20``: 20 levels of 1 call; ``nfe=100``: 50 levels of 2), no VJP.

    >>> from diffsolve.inverse import solve_inverse
    >>> from diffsolve.inverse.methods.guidance import demo_problem
    >>> res = solve_inverse(**demo_problem(), method="daps", nfe=20, num=4)
    >>> res.nfe, res.info["levels"], res.info["vjp"]
    (20, 20, 0)
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ...checks import check_int, check_number
from ...noise import NoiseSource
from ...sample import SampleResult, sample
from ...schedules import DEFAULT_S_RANGE, make_schedule
from ..problem import Problem
from .base import InverseMethod, register
from .guidance import calls_per_step_budget, check_clip, clip_x0, largest_singular_value

__all__ = ["DAPS"]

#: the NoiseSource steps of DAPS's own draws (apart from the samplers' steps and the measurement's)
LANGEVIN_STEP = 1 << 20


@register
class DAPS(InverseMethod):
    """Decoupled annealing posterior sampling (Zhang et al. 2025, Alg. 1).

    Options:
        ode_nfe: network calls of each level's ODE solve; nfe must be a multiple.  Default by
            budget, as the paper's configurations: 1 below 100 calls (measured at nfe=20:
            MNIST inpainting 15.2 dB with 20 levels x 1 vs 13.5 dB with 10 x 2), 2 below 1000
            (DAPS-100: 50 levels x 2), else 5 (DAPS-1K: 200 levels x 5).
        ode_solver: the solver of the ODE solves (default ``"dpm++2m"``; deterministic ones).
        langevin_steps: Langevin steps per level (default 100, the paper's).
        lr: Langevin step as a fraction of 1/L_i (default 0.5).
        lr_min_ratio: the step's linear decay over the levels (default 1.0: none; the paper 0.01).
        tau: the likelihood's width (default: the measurement's sigma_y, or 1e-3 if it is 0).
        s_min: the last annealing level (default 0.05, in data units; the paper's 0.1 on [-1, 1]).
        clip: None (default) or (lo, hi): clamp the ODE's x0-hat.
    """

    name = "daps"
    paper = ("Improving Diffusion Inverse Problem Solving with Decoupled Noise Annealing "
             "(Zhang et al., CVPR 2025), Alg. 1")
    cost = "ode_nfe forward calls per annealing level (nfe = levels x ode_nfe), no VJP; Langevin is free"
    needs = ()
    default_nfe = 20

    def __init__(self, ode_nfe: int | None = None, ode_solver: str = "dpm++2m", langevin_steps: int = 100, lr: float = 0.5,
                 lr_min_ratio: float = 1.0, tau: float | None = None, s_min: float = 0.05, clip: Any = None):
        self.ode_nfe = None if ode_nfe is None else check_int("daps", "ode_nfe", ode_nfe, minimum=1)
        self.ode_solver = ode_solver
        self.langevin_steps = check_int("daps", "langevin_steps", langevin_steps, minimum=0)
        self.lr = check_number("daps", "lr", lr, 0, 1, low_open=True)
        self.lr_min_ratio = check_number("daps", "lr_min_ratio", lr_min_ratio, 0, 1, low_open=True)
        self.tau = None if tau is None else check_number("daps", "tau", tau, 0, low_open=True)
        self.s_min = check_number("daps", "s_min", s_min, 0, low_open=True)
        self.clip = check_clip("daps", clip)

    def levels(self, prior, n: int) -> list[float]:
        """The n annealing levels: Karras-spaced from the path's s_max down to s_min."""
        p = getattr(prior, "path", None)
        lo_path, hi = (p.s_min, p.s_max) if p is not None else DEFAULT_S_RANGE
        if not lo_path < self.s_min < hi:
            raise ValueError(f"daps: s_min={self.s_min!r} is not accepted; accepted: a level inside the prior's "
                             f"range ({lo_path:.4g}, {hi:.4g}) (each level's ODE solve needs room below it)")
        if n == 1:
            return [hi]
        return make_schedule("karras", n - 1, path=p, s_min=self.s_min, s_max=hi, final="s_min").tolist()

    def run(self, prior, problem: Problem, noise, *, nfe, seeds, cond, progress=False):
        ode_nfe = self.ode_nfe if self.ode_nfe is not None else (1 if nfe < 100 else 2 if nfe < 1000 else 5)
        n = calls_per_step_budget("daps", nfe, ode_nfe, "per annealing level (its ODE solve)")
        levels = self.levels(prior, n)
        A, meas = problem.operator, problem.y
        tau = self.tau if self.tau is not None else (problem.sigma_y if problem.sigma_y > 0 else 1e-3)
        lip_A = largest_singular_value(A) ** 2
        src = NoiseSource(seeds)
        y, calls, evals = noise * levels[0], 0, []
        for i, s in enumerate(levels):
            ode = sample(prior, y, solver=self.ode_solver, nfe=ode_nfe, schedule="karras", s_max=s,
                         y_start=y, cond=cond)                                       # [DAPS Alg. 1 l.3]
            calls += ode.nfe
            evals.append(ode.eval_levels)
            x0_hat = clip_x0(ode.samples, self.clip)
            r2 = s * s                                                               # r_i = s_i  [DAPS Eq. 9]
            decay = 1 + (i / max(n - 1, 1)) * (self.lr_min_ratio - 1)
            eta = self.lr * decay / (1 / r2 + lip_A / tau**2)
            x = x0_hat
            for j in range(self.langevin_steps):                                     # [DAPS Alg. 1 l.4-6]
                grad = (x0_hat - x) / r2 + A.adjoint(meas.to(x.dtype) - A.forward(x)) / tau**2   # [DAPS Eq. 10]
                x = x + eta * grad + math.sqrt(2 * eta) * src.normal(LANGEVIN_STEP + i, x, draw=j + 1)
            if i + 1 < n:
                y = x + levels[i + 1] * src.normal(LANGEVIN_STEP + i, x, draw=0)    # [DAPS Alg. 1 l.7]
        sigmas = torch.tensor(levels + [0.0], dtype=torch.float64)
        return SampleResult(samples=x, nfe=calls, sigmas=sigmas, solver=f"daps/{self.ode_solver}",
                            eval_levels=torch.cat(evals),
                            info={"vjp": 0, "levels": n, "ode_nfe": ode_nfe, "tau": tau,
                                  "langevin_steps": self.langevin_steps})
