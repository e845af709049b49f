"""Best-of-N: N independent samples of the base sampler per returned sample, one chosen by
its reward.

``select="tilted"`` (the default) draws the returned sample with probability proportional to
``exp(lam r(x))`` among the N (sampling importance resampling, Rubin 1988): consistent for the
tilted target p(x) exp(lam r(x)) / Z as N grows, and the baseline that particle methods must
beat at equal network calls.  ``select="max"`` returns the highest-reward candidate
(the verifier pick of "Inference-Time Scaling for Diffusion Models beyond Scaling Denoising
Steps", Ma et al. 2025, and FK steering's BoN baseline): it maximises the reward, not the
tilted distribution, and is the first place reward hacking shows.

    >>> import torch, diffsolve
    >>> from diffsolve.rewards import Linear
    >>> g = diffsolve.exact_model("gmm-2d")
    >>> res = diffsolve.steer(g, Linear(torch.tensor([2.0, 0.0])), "best-of-n", num=3, particles=8, nfe=10)
    >>> res.nfe, res.info["candidates"]
    (80, 8)
"""

from __future__ import annotations


import torch

from ..checks import check_choice
from ..noise import NoiseSource
from ..sample import sample
from .base import SteerMethod, register, repeat_cond
from .particles import Particles, particle_seeds

__all__ = ["BestOfN"]


@register
class BestOfN(SteerMethod):
    """N candidates per sample from the base sampler, one kept by reward.  Options:
    ``select`` (``"tilted"``: by exp(lam r), the default; ``"max"``), ``solver`` (default
    ``"dpm++2m"``, any solver), ``schedule`` (default ``"karras"``) and ``solver_options``."""

    name = "best-of-n"
    paper = "sampling importance resampling (Rubin 1988); best-of-N verifier selection (Ma et al. 2025)"
    cost = "N x nfe network calls (N candidates)"
    needs = ()
    exact = True  # select="tilted"

    def __init__(self, select: str = "tilted", solver: str = "dpm++2m", schedule: str = "karras",
                 solver_options: dict | None = None):
        self.select = check_choice("best-of-n", "select", select, ("tilted", "max"))
        self.solver, self.schedule, self.solver_options = solver, schedule, dict(solver_options or {})

    def run(self, prior, reward, *, num, particles, nfe, lam, seeds, cond, progress=False):
        N = particles
        pseeds = particle_seeds(seeds, N)
        res = sample(prior, NoiseSource.initial(pseeds, prior.shape), solver=self.solver, nfe=nfe,
                     schedule=self.schedule, seeds=pseeds, cond=repeat_cond(cond, num, N), progress=progress,
                     **self.solver_options)
        r = reward(res.samples).to(torch.float64)
        P = Particles(seeds, N)
        P.reweight(lam * r)
        rows = P.draw(0) if self.select == "tilted" else P.best(r)
        res.info.update(reward=r[rows], candidates=N, reward_calls=r.shape[0], log_z=P.log_normaliser(),
                        candidate_rewards=r.reshape(num, N), solver=res.solver)
        res.samples, res.nfe = res.samples[rows], res.nfe * N
        return res


