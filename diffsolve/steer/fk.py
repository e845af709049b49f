"""Feynman-Kac steering (Singhal, Horvitz, Teehan, Ren, Yu, Cho & Ranganath, 2025, "A General
Framework for Inference-time Scaling and Steering of Diffusion Models").

K particles per sample follow the prior's *stochastic* sampler (the proposal is the base
chain itself: no gradient needed) and are reweighted by potentials G_i of their denoised
estimates, then resampled [FK Alg. 1].  With r_i = lam r(x0-hat_i) the reward of particle's
x0-hat at step i, the potentials [FK Sec. 3.1] are

    difference:  G_i = exp(r_i - r_{i-1})            (telescopes to exp(lam r(x0)))
    max:         G_i = exp(max_{j <= i} r_j)
    sum:         G_i = exp(sum_{j <= i} r_j)
    current:     G_i = exp(r_i)

and the final potential makes the product of all potentials exp(lam r(x_0)) exactly
[FK Eq. 5]:  G_N = exp(lam r(x_N)) / prod_{i < N} G_i,  so that with ``select="sample"`` (draw
one particle per sample by its weight) the returned samples converge to the tilted target
p(x) exp(lam r(x)) / Z as K grows, whatever the intermediate potential, and
``info["log_z"]`` is an unbiased estimate (in Z) of Z for the base chain.  ``select="max"``
returns each population's highest-reward particle instead (the paper's choice for text-to-image;
not the tilted target).

Bookkeeping in this engine: the hook after step i sees the state y_i and x0-hat made at
y_{i-1} (the step's own network call), so the potential of y_{i-1} weights the path
(.., y_{i-1}, y_i) and resampling moves whole paths: valid SMC with no extra network call.
Weights accumulate between resamplings (adaptive, ESS-triggered) and live in log space.

    >>> import torch, diffsolve
    >>> from diffsolve.rewards import Linear
    >>> g = diffsolve.exact_model("gmm-2d")
    >>> res = diffsolve.steer(g, Linear(torch.tensor([3.0, 0.0])), "fk", num=2, particles=16, nfe=20)
    >>> res.nfe, len(res.info["ess"]), res.info["log_z"].shape
    (320, 19, torch.Size([2]))
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..checks import check_choice, check_int, check_number
from ..noise import NoiseSource
from ..sample import sample
from .base import SteerMethod, check_stochastic, register, repeat_cond
from .particles import Particles, particle_seeds
from .resample import SCHEMES

__all__ = ["FK", "FKPotentials", "POTENTIALS"]

POTENTIALS = ("difference", "max", "sum", "current")


class FKPotentials:
    """The hook: potentials of x0-hat, accumulated log weights and ESS-triggered resampling
    every ``every`` steps (potentials are applied at those steps only)."""

    def __init__(self, particles: Particles, reward, lam: float, potential: str, every: int):
        self.P, self.reward, self.lam, self.kind, self.every = particles, reward, lam, potential, every
        self.applied: Tensor | None = None  # sum of log G applied so far, per particle
        self.last: Tensor | None = None     # r at the last application (difference)
        self.run: Tensor | None = None      # running max / sum of r
        self.calls = 0

    def __call__(self, ctx):
        if ctx.i % self.every or ctx.i >= ctx.n_steps:   # the last step's weight comes in `finish`
            return None
        s = ctx.state.at(ctx.i - 1)
        r = self.lam * self.reward.twist(ctx.x0, s).to(torch.float64)
        self.calls += r.shape[0]
        zero = torch.zeros_like(r)
        if self.kind == "difference":
            g = r - (self.last if self.last is not None else zero)
            self.last = r
        elif self.kind == "max":
            self.run = r if self.run is None else torch.maximum(self.run, r)
            g = self.run
        elif self.kind == "sum":
            self.run = r if self.run is None else self.run + r
            g = self.run
        else:
            g = r
        self.applied = g if self.applied is None else self.applied + g
        self.P.reweight(g)
        carry = [t for t in (self.applied, self.last, self.run) if t is not None]
        state, carry = self.P.resample(ctx.state, ctx.i, carry)
        it = iter(carry)
        self.applied = next(it)
        self.last = next(it) if self.last is not None else None
        self.run = next(it) if self.run is not None else None
        return state

    def finish(self, x: Tensor) -> Tensor:
        """The final potential exp(lam r(x_N)) / prod G [FK Eq. 5]; returns lam r(x_N)."""
        r = self.lam * self.reward(x).to(torch.float64)
        self.calls += r.shape[0]
        self.P.reweight(r - (self.applied if self.applied is not None else 0.0))
        return r


@register
class FK(SteerMethod):
    """Feynman-Kac steering: particles of the stochastic base sampler, resampled by reward
    potentials of x0-hat.  Options:

    * ``solver`` (default ``"ddpm"``): a stochastic solver (deterministic ones are refused);
    * ``potential`` (default ``"difference"``): one of ``difference``, ``max``, ``sum``, ``current``;
    * ``every`` (default 1): apply potentials and consider resampling every this many steps;
    * ``ess_threshold`` (default 0.5): resample a population when its ESS < threshold x K;
    * ``resample`` (default ``"systematic"``), ``select`` (``"sample"``: by weight, the tilted
      target; ``"max"``: the highest reward);
    * ``schedule`` (default ``"karras"``) and any option of the solver (``solver_options``).
    """

    name = "fk"
    paper = "A General Framework for Inference-time Scaling and Steering of Diffusion Models (Singhal et al. 2025)"
    cost = "K network calls per step (K particles); rewards on x0-hat, no gradient"
    needs = ("stochastic",)
    exact = True

    def __init__(self, solver: str = "ddpm", potential: str = "difference", every: int = 1,
                 ess_threshold: float = 0.5, resample: str = "systematic", select: str = "sample",
                 schedule: str = "karras", solver_options: dict | None = None):
        self.solver = check_stochastic("fk", solver)
        self.potential = check_choice("fk", "potential", potential, POTENTIALS)
        self.every = check_int("fk", "every", every, minimum=1, maximum=100_000)
        self.threshold = check_number("fk", "ess_threshold", ess_threshold, 0, 1)
        self.scheme = check_choice("fk", "resample", resample, SCHEMES)
        self.select = check_choice("fk", "select", select, ("sample", "max"))
        self.schedule, self.solver_options = schedule, dict(solver_options or {})

    def run(self, prior, reward, *, num, particles, nfe, lam, seeds, cond, progress=False):
        K = particles
        pseeds = particle_seeds(seeds, K)
        P = Particles(seeds, K, self.scheme, self.threshold)
        hook = FKPotentials(P, reward, lam, self.potential, self.every)
        noise = NoiseSource.initial(pseeds, prior.shape)
        res = sample(prior, noise, solver=self.solver, nfe=nfe, schedule=self.schedule, seeds=pseeds,
                     cond=repeat_cond(cond, num, K), hooks=[hook], progress=progress, **self.solver_options)
        r = hook.finish(res.samples)
        rows = P.draw(len(P.ess_history) + 1) if self.select == "sample" else P.best(r)
        out = res.samples[rows]
        res.info.update(reward=(r[rows] / lam if lam > 0 else reward(out)), ess=P.ess_history, resampled=P.resampled,
                        resample_steps=P.events, log_z=P.log_normaliser(), log_weights=P.normalised(),
                        reward_calls=hook.calls, solver=self.solver, potential=self.potential)
        res.samples, res.nfe = out, res.nfe * K
        return res
