"""RED-diff: the variational sampler of Mardani, Song, Kautz & Vahdat ("A Variational Perspective
on Solving Inverse Problems with Diffusion Models", ICLR 2024, Algorithm 1).

The posterior is approximated by a point mass (a Gaussian of vanishing width) at ``mu``, fitted
by minimising over a decreasing sequence of levels t with Adam

    loss(mu) = |meas - A mu|^2 / (2 sigma_y^2) + lambda_t (sg[eps_hat(x_t, t) - eps])^T mu,
    x_t = alpha_t mu + sigma_t eps,  eps ~ N(0, I),  lambda_t = lambda sigma_t / alpha_t     [RED-diff Alg. 1, Eq. 13]

(sg: stop-gradient: no VJP through the network).

Canonical space.  ``x_t / alpha_t = mu + s eps`` and ``eps_hat = (y_t - D(y_t, s)) / s``, so with
``lambda_t = lambda s`` the regulariser's gradient is

    lambda s (eps_hat - eps) = lambda (y_t - D - s eps) = lambda (mu - D(mu + s eps, s)),       (R1)

the RED residual of our denoiser at a random noisy copy of mu.  The loss's data term is
:meth:`Problem.grad`.  Levels: the prior's Karras grid from s_max to s_min, one per iteration
(the paper's descending timesteps).  ``mu`` starts at the pseudo-inverse ``A^+ meas`` where the
operator has an SVD, else at ``A^T meas``.

The output is ``mu``: a point estimate per sample (samples differ only through their eps draws),
not a posterior sample: its spread underestimates the posterior's.

Cost: 1 forward call per iteration, no VJP (nfe = iterations).

    >>> from diffsolve.inverse import solve_inverse
    >>> from diffsolve.inverse.methods.guidance import demo_problem
    >>> res = solve_inverse(**demo_problem(), method="red-diff", nfe=20, num=4)
    >>> res.nfe, res.info["vjp"]
    (20, 0)
"""

from __future__ import annotations

from typing import Any

import torch

from ...checks import check_number
from ...counting import CountingDenoiser
from ...noise import NoiseSource
from ...sample import SampleResult
from ...schedules import make_schedule
from ..problem import Problem
from .base import InverseMethod, register
from .guidance import check_clip, clip_x0

__all__ = ["REDDiff"]

#: the NoiseSource step of RED-diff's eps draws (apart from the samplers' and the measurement's)
EPS_STEP = 1 << 21


@register
class REDDiff(InverseMethod):
    """RED-diff (Mardani et al. 2024, Alg. 1): Adam on the variational mean with the
    regulariser (R1).

    Options:
        lam: lambda of ``lambda_t = lambda s`` (default 0.25, the paper's).
        lr: Adam's learning rate in data units (default 0.1; the paper's 0.5 was for 1000
            iterations on [-1, 1] images; at 10-50 iterations 0.5 overshoots).
        betas: Adam's (beta1, beta2) (default (0.9, 0.99), the paper's).
        clip: None (default) or (lo, hi): clamp mu after each step.
    """

    name = "red-diff"
    paper = ("A Variational Perspective on Solving Inverse Problems with Diffusion Models "
             "(Mardani et al., ICLR 2024), Alg. 1")
    cost = "1 forward call per Adam iteration, no VJP (nfe = iterations)"
    needs = ()
    default_nfe = 50

    def __init__(self, lam: float = 0.25, lr: float = 0.1, betas: tuple[float, float] = (0.9, 0.99), clip: Any = None):
        self.lam = check_number("red-diff", "lam", lam, 0)
        self.lr = check_number("red-diff", "lr", lr, 0, low_open=True)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"red-diff: betas={betas!r} is not accepted; accepted: (beta1, beta2) in [0, 1)")
        self.betas = tuple(check_number("red-diff", f"betas[{k}]", b, 0, 1, high_open=True) for k, b in enumerate(betas))
        self.clip = check_clip("red-diff", clip)

    def run(self, prior, problem: Problem, noise, *, nfe, seeds, cond, progress=False):
        A = problem.operator
        # [RED-diff Alg. 1: init] mu_0 = A^+ y; damped by sigma_y^2 so that a noisy measurement is
        # not amplified through small singular values (blur: the plain pinv is noise at 3 dB PSNR)
        mu = A.pinv(problem.y, damping=problem.sigma_y ** 2) if A.svd() is not None else A.adjoint(problem.y)
        mu = mu.to(noise.dtype).clone().requires_grad_(True)
        levels = make_schedule("karras", max(nfe - 1, 1), path=getattr(prior, "path", None), final="s_min")
        levels = levels[:nfe].tolist()
        cond = prior.check(noise, cond)
        prior.prepare(torch.tensor(levels, dtype=torch.float64), noise.dtype)
        den = CountingDenoiser(prior, cond)
        opt = torch.optim.Adam([mu], lr=self.lr, betas=self.betas)
        src = NoiseSource(seeds)
        for i, s in enumerate(levels):                                                 # [RED-diff Alg. 1 l.2-7]
            eps = noise if i == 0 else src.normal(EPS_STEP + i, noise)                 # eps ~ N(0, I)
            with torch.no_grad():
                d = den(mu.detach() + s * eps, s)                                      # D(mu + s eps, s)
                grad = self.lam * (mu.detach() - d) - problem.grad(mu.detach())        # (R1) + data term [Eq. 13]
            mu.grad = grad
            opt.step()
            if self.clip is not None:
                with torch.no_grad():
                    mu.copy_(clip_x0(mu, self.clip))
        out = mu.detach()
        return SampleResult(samples=out, nfe=den.calls, sigmas=torch.tensor(levels, dtype=torch.float64),
                            solver="red-diff/adam", eval_levels=den.eval_levels(),
                            info={"vjp": 0, "lam": self.lam, "lr": self.lr})
