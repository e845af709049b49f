"""DiffPIR: Denoising Diffusion Models for Plug-and-Play Image Restoration (Zhu, Zhang, Liang,
Cao, Wen, Timofte & Van Gool, CVPRW 2023, Algorithm 1).

Per step, from the state at level s:

1. x0-hat by the denoiser, ``x0 = D(y, s)``                                          [DiffPIR Eq. 11]
2. the data proximal step ``x0' = argmin_x |meas - A x|^2 + rho |x - x0|^2`` with
   ``rho = lambda sigma_y^2 / sigma_t^2``                                      [DiffPIR Eq. 13, Alg. 1 l.4]
3. the re-noising ``x_{t-1} = sqrt(abar_{t-1}) (x0' + s'(sqrt(1 - zeta) eps_hat + sqrt(zeta) eps))``
   with ``eps_hat = (y - x0') / s`` (the effective noise of the prox output)       [DiffPIR Eq. 15, Alg. 1 l.6-7]

Canonical space.  DiffPIR's ``sigma_t = sqrt(1 - abar_t) / sqrt(abar_t)`` is our ``s``, so
``rho = lambda sigma_y^2 / s^2``; dividing step 3 by sqrt(abar_{t-1}) gives
``y' = x0' + s' (sqrt(1 - zeta) eps_hat + sqrt(zeta) z)``.

How it runs on our engine: steps 1-2 are a denoiser wrapper (the prox replaces x0-hat), step 3
is our ``ddim`` solver (which lands on ``x0' + s' eps_hat``) followed by a hook that mixes in
fresh noise: ``y' = x0' + sqrt(1 - zeta) (y_ddim - x0') + s' sqrt(zeta) z``.  Our ``ddim-eta``
solver is not DiffPIR's step: its fresh-noise fraction is ``eta^2 (1 - s'^2/s^2)``, which
depends on the step, while DiffPIR's zeta is a constant fraction of s'^2.

The prox: with the operator's SVD, in closed form (per singular direction
``(sv u^T meas + rho v^T x0) / (sv^2 + rho)``); without one, ``cg_iters`` conjugate-gradient
iterations on ``(A^T A + rho I) x = A^T meas + rho x0`` from x0 (forward/adjoint only).
sigma_y = 0 gives rho = 0: the projection onto ``A x = meas`` nearest x0.

Cost: 1 network call per step, no VJP (nfe = steps).

    >>> from diffsolve.inverse import solve_inverse
    >>> from diffsolve.inverse.methods.guidance import demo_problem
    >>> res = solve_inverse(**demo_problem(), method="diffpir", nfe=20, num=4)
    >>> res.nfe, res.info["vjp"], res.info["zeta"], res.info["lambda"]
    (20, 0, 0.3, 7.0)
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ...checks import check_int, check_number
from ...denoisers import DenoiserWrapper
from ...noise import NoiseSource
from ...sample import sample
from ...tensors import bc
from ..operators import SVD, Operator
from ..problem import Problem
from .base import InverseMethod, register
from .guidance import check_clip, clip_x0, per_family

__all__ = ["DiffPIR", "data_prox"]

#: (lambda, zeta) per operator family: lambda = 7 and zeta = 0.3 as deepinv's DiffPIR defaults for
#: noisy deblurring / super-resolution, zeta = 1 (fresh noise only) for inpainting, as we read
#: [DiffPIR Sec. 4]; not re-checked against the released per-task scripts.  Measured on MNIST
#: random-70% inpainting at nfe=20 (8 images): lambda 1 / 7 / 20 -> 17.97 / 17.63 / 17.09 dB,
#: zeta 0.3 / 0.7 / 1.0 -> 13.2 / 15.1 / 17.6 dB.
LAMBDA = {"default": 7.0}
ZETA = {"default": 0.3, "inpainting": 1.0, "deblurring": 0.3, "super-resolution": 0.3, "denoising": 0.3}


def data_prox(operator: Operator, svd: SVD | None, meas: Tensor, x0: Tensor, rho: float, cg_iters: int = 20) -> Tensor:
    """``argmin_x |meas - A x|^2 + rho |x - x0|^2`` [DiffPIR Eq. 13]: closed form in the SVD basis,
    else conjugate gradients on the normal equations starting from x0.

    >>> from diffsolve.inverse import LinearOperator
    >>> A = LinearOperator(torch.tensor([[1.0, 0.0]]), (2,))
    >>> x0 = torch.tensor([[0.0, 3.0]], dtype=torch.float64)
    >>> data_prox(A, A.svd(), torch.tensor([[2.0]], dtype=torch.float64), x0, rho=1.0).tolist()
    [[1.0, 3.0]]
    """
    if svd is not None:
        z = svd.Vt(x0)
        sv = svd.sv.to(x0.dtype)
        k = svd.rank
        z = torch.cat([(sv * svd.Ut(meas.to(x0.dtype)) + rho * z[:, :k]) / (sv**2 + rho), z[:, k:]], 1)
        return svd.V(z)
    b = operator.adjoint(meas.to(x0.dtype)) + rho * x0
    x = x0
    r = b - operator.adjoint(operator.forward(x)) - rho * x
    p, rr = r, _dot(r, r)
    for _ in range(cg_iters):
        Ap = operator.adjoint(operator.forward(p)) + rho * p
        alpha = rr / _dot(p, Ap).clamp_min(1e-300)
        x = x + bc(alpha, x) * p
        r = r - bc(alpha, r) * Ap
        rr_new = _dot(r, r)
        p = r + bc(rr_new / rr.clamp_min(1e-300), p) * p
        rr = rr_new
    return x


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).reshape(a.shape[0], -1).sum(1)


class ProxDenoiser(DenoiserWrapper):
    """D'(y, s) = the data prox of D(y, s) with rho = lambda sigma_y^2 / s^2  [DiffPIR Alg. 1 l.3-4]."""

    def __init__(self, inner, problem: Problem, lam: float, cg_iters: int, clip):
        super().__init__(inner)
        self.problem, self.lam, self.cg_iters, self.clip = problem, lam, cg_iters, clip
        self.svd = problem.operator.svd()

    def denoise(self, y, s, **cond):
        x0 = self.inner(y, s, **cond)                                              # [DiffPIR Eq. 11]
        s_val = s if isinstance(s, float) else float(s[0])
        rho = self.lam * self.problem.sigma_y**2 / s_val**2                        # [DiffPIR Alg. 1 l.1]
        x0 = data_prox(self.problem.operator, self.svd, self.problem.y, x0, rho, self.cg_iters)  # [DiffPIR Eq. 13]
        return clip_x0(x0, self.clip)


class Renoise:
    """Hook after each ddim step: y' = x0' + sqrt(1-zeta)(y_ddim - x0') + s' sqrt(zeta) z  [DiffPIR Eq. 15]."""

    def __init__(self, zeta: float, seeds):
        self.zeta, self.noise = zeta, NoiseSource(seeds)

    def __call__(self, ctx):
        s_next = ctx.s
        if s_next == 0 or self.zeta == 0:
            return None
        x0 = ctx.x0
        z = self.noise.normal(step=ctx.i, like=ctx.y, draw=0)
        y = x0 + math.sqrt(1 - self.zeta) * (ctx.y - x0) + (s_next * math.sqrt(self.zeta)) * z
        return ctx.replace(y=y)


@register
class DiffPIR(InverseMethod):
    """DiffPIR (Zhu et al. 2023, Alg. 1): prox data step on x0-hat, then DDIM with zeta re-noising.

    Options:
        lam: lambda of ``rho = lambda sigma_y^2 / s^2`` (default 7.0 for every family).
        zeta: fraction of fresh noise in the re-noising, in [0, 1] (default 1.0 for inpainting,
            0.3 for deblurring, super-resolution, denoising and dense operators).
        cg_iters: conjugate-gradient iterations of the prox where the operator has no SVD
            (default 20).
        schedule: the schedule of levels (default ``"karras"``).
        clip: None (default) or (lo, hi): clamp x0-hat after the prox.
    """

    name = "diffpir"
    paper = "Denoising Diffusion Models for Plug-and-Play Image Restoration (Zhu et al., CVPRW 2023), Alg. 1"
    cost = "1 forward call per step, no VJP (nfe = steps)"
    needs = ()
    default_nfe = 20

    def __init__(self, lam: float | None = None, zeta: float | None = None, cg_iters: int = 20,
                 schedule: str = "karras", clip: Any = None):
        self.lam = None if lam is None else check_number("diffpir", "lam", lam, 0)
        self.zeta = None if zeta is None else check_number("diffpir", "zeta", zeta, 0, 1)
        self.cg_iters = check_int("diffpir", "cg_iters", cg_iters, minimum=1)
        self.schedule, self.clip = schedule, check_clip("diffpir", clip)

    def run(self, prior, problem: Problem, noise, *, nfe, seeds, cond, progress=False):
        lam = per_family(self.lam, LAMBDA, problem.operator)
        zeta = per_family(self.zeta, ZETA, problem.operator)
        wrapper = ProxDenoiser(prior, problem, lam, self.cg_iters, self.clip)
        res = sample(wrapper, noise, solver="ddim", nfe=nfe, schedule=self.schedule, seeds=list(seeds), cond=cond,
                     hooks=[Renoise(zeta, seeds)], progress=progress)           # [DiffPIR Alg. 1 l.2-8]
        res.info.update({"vjp": 0, "lambda": lam, "zeta": zeta})
        return res
