"""TDS for inverse problems: twisted sequential Monte Carlo (Wu, Trippe, Naesseth, Blei &
Cunningham, NeurIPS 2023) with the measurement's log-likelihood as the reward.

The algorithm is :mod:`diffsolve.steer.tds` (one implementation for every reward); here the
reward is the :class:`~diffsolve.inverse.Problem`, whose twist [TDS Eq. 8] inflates the noise
by x0-hat's uncertainty,

    log p~_s(y_meas | y) = -|y_meas - A D(y, s)|^2 / (2 (sigma_y^2 + r_s^2)),
    r_s^2 = v s^2 / (v + s^2)   (v: the data's variance, ``data_var``),

and ``nfe`` is the whole budget: K particles x (a forward call and a VJP) per step, so
``nfe / (2 K)`` steps.  Particles start from their own seeded noise (seeds derived from each
sample's seed, :func:`~diffsolve.steer.particles.particle_seeds`); the ``noise`` given to the
method is not used.

    >>> import torch, diffsolve
    >>> from diffsolve.inverse import LinearOperator, solve_inverse
    >>> g = diffsolve.exact_model("gmm-2d")
    >>> A = LinearOperator(torch.tensor([[1.0, 0.0]], dtype=torch.float64), (2,))
    >>> res = solve_inverse(g, A, torch.tensor([[0.0]], dtype=torch.float64), 0.2, method="tds",
    ...                     nfe=160, num=2, particles=4)          # 20 steps x (call + VJP) x 4 particles
    >>> res.nfe, res.info["vjp"], res.info["steps"], tuple(res.samples.shape)
    (160, 80, 20, (2, 2))
"""

from __future__ import annotations

from ...checks import check_int, check_number
from ...steer.tds import TDS as SteerTDS
from ..problem import Problem
from .base import InverseMethod, register
from .guidance import calls_per_step_budget

__all__ = ["TDS"]

@register
class TDS(InverseMethod):
    """Twisted diffusion sampler (Wu et al. 2023): asymptotically exact as ``particles`` grows.
    Options (one setting for every operator family: the paper tunes only K):

    * ``particles`` (default 16): K particles per posterior sample;
    * ``resample`` (default ``"systematic"``; or ``"stratified"``, ``"multinomial"``);
    * ``ess_threshold`` (default 0.5): resample a group when its ESS < threshold x K (1.0: at
      every step, 0: never), in [0, 1];
    * ``data_var`` (default 1.0): v in the twist's r_s^2 = v s^2 / (v + s^2), > 0;
    * ``schedule`` (default ``"karras"``): the grid, ending at the path's s_min.

    Cost: per step one network call and one VJP for each of the K particles; ``nfe`` must be a
    multiple of 2 K and buys ``nfe / (2 K)`` steps (at least 2).
    """

    name = "tds"
    paper = ("Practical and Asymptotically Exact Conditional Sampling in Diffusion Models (Wu et al. 2023), "
             "Eq. 8-10, Alg. 1")
    cost = "2 K network calls per step (K particles: a call and a VJP each)"
    needs = ("vjp",)
    exact = True

    def __init__(self, particles: int = 16, resample: str = "systematic", ess_threshold: float = 0.5,
                 data_var: float = 1.0, schedule: str = "karras"):
        self.K = check_int("tds", "particles", particles, minimum=1, maximum=1_000_000)
        self.smc = SteerTDS(resample=resample, ess_threshold=ess_threshold, schedule=schedule)  # checks them
        self.data_var = check_number("tds", "data_var", data_var, 0, low_open=True)

    def run(self, prior, problem, noise, *, nfe, seeds, cond, progress=False):
        K = self.K
        steps = calls_per_step_budget("tds", nfe, 2 * K, f"per step ({K} particles: a forward call and a VJP each)")
        if steps < 2:
            raise ValueError(f"tds: nfe={nfe} buys {steps} step of {K} particles; accepted: a multiple of "
                             f"2 K = {2 * K} of at least {4 * K}, or fewer particles")
        reward = Problem(problem.operator, problem.y.repeat_interleave(K, 0), problem.sigma_y, self.data_var)
        res = self.smc.particles(prior, reward, 1.0, K=K, steps=steps, seeds=list(seeds), cond=cond,
                                 progress=progress)
        res.info.update(particles=K)
        return res
