"""TDS: twisted sequential Monte Carlo (Wu, Trippe, Naesseth, Blei & Cunningham, NeurIPS 2023,
"Practical and Asymptotically Exact Conditional Sampling in Diffusion Models"), for any
differentiable reward.

K particles per sample follow the prior's DDPM chain (our ``ddpm`` solver step in canonical
space, y' = m(y) + s_up z) *twisted* toward the reward, and are reweighted so that as K grows
the selected particle is an exact draw from the tilted distribution of that chain.

Twisting function [TDS Eq. 8] at level s, with x0-hat = D(y, s): the reward's twist
``log p~_s(y) = lam twist(x0-hat, s)`` (``lam r(x0-hat)`` by default; a linear-Gaussian
measurement inflates its variance by x0-hat's uncertainty: :class:`diffsolve.inverse.Problem`).

Proposal [TDS Eq. 9]: the DDPM step from the twisted denoiser (twisted score = score +
grad log p~, i.e. ``D~ = D + s^2 J^T grad_x0 log p~_s``: one vector-Jacobian product through
the network per step, :class:`~diffsolve.guidance.VJPGuided`): m~ = the step's mean from D~,
same variance s_up^2.  Incremental weight [TDS Eq. 10, Alg. 1] of the move y_i -> y_{i+1}:

    log w += log N(y_{i+1}; m(y_i), s_up^2) - log N(y_{i+1}; m~(y_i), s_up^2)
             + log p~_{i+1}(y_{i+1}) - log p~_i(y_i)

with the first weight log p~_0(y_0), and the last twist replaced by the reward itself at the
chain's last state y_N (the chain ends at the schedule's s_min: ``lam twist(y_N, s_N)``).
Particles are resampled [TDS Alg. 1] when a population's ESS drops below ``ess_threshold`` K
(:class:`.particles.Particles`: whole-state re-indexing, own noise seeds kept); at the end one
particle per sample is drawn by its weight.  ``res.nfe`` = (forward calls + VJPs) x K.

    >>> import torch, diffsolve
    >>> from diffsolve.rewards import Linear
    >>> g = diffsolve.exact_model("gmm-2d")
    >>> res = diffsolve.steer(g, Linear(torch.tensor([2.0, 0.0])), "tds", num=2, particles=4, nfe=10)
    >>> res.nfe, res.info["vjp"]          # 10 steps x (call + VJP) x 4 particles
    (80, 40)
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..checks import check_choice, check_number
from ..guidance.gradient import VJPGuided
from ..noise import NoiseSource
from ..sample import SampleResult, sample
from ..schedules import SCHEDULES, make_schedule
from ..solvers.euler import ddim_update
from ..solvers.stochastic import ancestral_levels
from .base import SteerMethod, register, repeat_cond
from .particles import Particles, particle_seeds
from .resample import SCHEMES

__all__ = ["TDS", "Twist", "TwistedWeights", "run_tds"]


class Twist:
    """The twisting function [TDS Eq. 8] as the covector of :class:`VJPGuided`:
    ``lam grad_x0 twist(x0, s)``.  Each call keeps x0-hat and ``log p~_s`` of the batch it
    saw, for the weights."""

    def __init__(self, reward, lam: float, proposal_scale: float = 1.0):
        self.reward, self.lam, self.push = reward, lam, proposal_scale
        self.x0: Tensor | None = None
        self.log: Tensor | None = None
        self.calls = 0

    def __call__(self, x0: Tensor, s) -> Tensor:
        self.x0, self.log = x0, self.lam * self.reward.twist(x0, s).to(torch.float64)
        self.calls += x0.shape[0]
        return self.push * self.lam * self.reward.twist_grad(x0, s)


class TwistedWeights:
    """The hook: incremental log weights [TDS Alg. 1] and ESS-triggered resampling."""

    def __init__(self, twist: Twist, particles: Particles, start: Tensor):
        self.twist, self.P, self.y_prev = twist, particles, start  # the state the coming step starts from
        self.pending: Tensor | float = 0.0  # the last move's proposal correction, (G K,)
        self.prev: Tensor | float = 0.0     # log p~ at the previous state, (G K,)

    def __call__(self, ctx):
        y, d, lt = self.y_prev, self.twist.x0, self.twist.log          # D and log p~ at y
        s, s1, y1, dt = ctx.state.at(ctx.i - 1), ctx.s, ctx.y, ctx.x0  # D~ = the step's x0-hat
        self.P.reweight(lt - self.prev + self.pending)                                         # [TDS Eq. 10]
        s_down, s_up = ancestral_levels(s, s1, 1.0)                  # the ddpm step's levels
        m, mt = ddim_update(y, d, s, s_down), ddim_update(y, dt, s, s_down)
        self.pending = (((y1 - mt).flatten(1).pow(2).sum(1) - (y1 - m).flatten(1).pow(2).sum(1))
                        / (2 * s_up * s_up)).to(torch.float64)       # log p(y1 | y) - log p~(y1 | y)
        self.prev = lt
        state = ctx.state
        if ctx.i < ctx.n_steps:
            state, (self.pending, self.prev) = self.P.resample(state, ctx.i, (self.pending, self.prev))
        self.y_prev = state.y
        return state

    def finish(self, y_N: Tensor, s_N: float) -> Tensor:
        """The last weights: the reward at the chain's last state replaces the last twist."""
        last = self.twist.lam * self.twist.reward.twist(y_N, s_N).to(torch.float64)
        self.twist.calls += y_N.shape[0]
        self.P.reweight(self.pending + last - self.prev)
        return last


def run_tds(prior, reward, lam: float, *, K: int, steps: int, seeds: list[int], cond: dict, scheme: str,
            threshold: float, schedule: str, progress: bool = False, proposal_scale: float = 1.0) -> SampleResult:
    """TDS with K particles per sample over ``steps`` DDPM steps ending at the path's s_min:
    one sample per seed.  ``res.nfe`` = (forward calls + VJPs) x K (per returned sample)."""
    n = len(seeds)
    pseeds = particle_seeds(seeds, K)
    grid = make_schedule(schedule, steps, path=getattr(prior, "path", None), final="s_min")
    start = grid[0].item() * NoiseSource.initial(pseeds, prior.shape)
    twist = Twist(reward, lam, proposal_scale)
    twisted = VJPGuided(prior, twist)                                  # the proposal [TDS Eq. 9]
    P = Particles(seeds, K, scheme, threshold)
    hook = TwistedWeights(twist, P, start)
    res = sample(twisted, start, solver="ddpm", nfe=steps, schedule=grid, y_start=start, seeds=pseeds,
                 cond=repeat_cond(cond, n, K), hooks=[hook], progress=progress)
    last = hook.finish(res.samples, float(res.sigmas[-1]))
    rows = P.draw(len(P.ess_history) + 1)
    res.samples = res.samples[rows]
    res.info.update(vjp=twisted.vjps * K, forward=res.nfe * K, steps=steps, ess=P.ess_history,
                    resampled=P.resampled, resample_steps=P.events, log_weights=P.normalised(),
                    log_z=P.log_normaliser(), reward_calls=twist.calls, twist_final=last[rows])
    res.nfe = (res.nfe + twisted.vjps) * K
    return res


@register
class TDS(SteerMethod):
    """Twisted diffusion sampler: asymptotically exact as ``particles`` grows.  Options:

    * ``resample`` (default ``"systematic"``; or ``"stratified"``, ``"multinomial"``);
    * ``ess_threshold`` (default 0.5): resample when ESS < threshold x K, in [0, 1];
    * ``schedule`` (default ``"karras"``): the DDPM grid, ending at the path's s_min;
    * ``proposal_scale`` (default 1.0, the paper's proposal): the proposal's shift is this
      multiple of the twist's gradient.  The weights use the proposal actually taken, so the
      target stays p exp(lam r) for any value; a stronger push helps when few particles must
      find a rare region (a class of a weak unconditional model).

    Cost: per step one network call and one VJP for each of the K particles.
    """

    name = "tds"
    paper = ("Practical and Asymptotically Exact Conditional Sampling in Diffusion Models (Wu et al. 2023), "
             "Eq. 8-10, Alg. 1")
    cost = "2 K network calls per step (K particles: a call and a VJP each)"
    needs = ("grad",)
    exact = True

    def __init__(self, resample: str = "systematic", ess_threshold: float = 0.5, schedule: str = "karras",
                 proposal_scale: float = 1.0):
        self.push = check_number("tds", "proposal_scale", proposal_scale, 0)
        self.scheme = check_choice("tds", "resample", resample, SCHEMES)
        self.threshold = check_number("tds", "ess_threshold", ess_threshold, 0, 1)
        self.schedule = check_choice("tds", "schedule", schedule, tuple(SCHEDULES))

    def particles(self, prior, reward, lam: float, *, K: int, steps: int, seeds: list[int], cond: dict,
                  progress: bool = False) -> SampleResult:
        """:func:`run_tds` with this instance's options (the inverse-problem TDS runs it too)."""
        return run_tds(prior, reward, lam, K=K, steps=steps, seeds=seeds, cond=cond, scheme=self.scheme,
                       threshold=self.threshold, schedule=self.schedule, progress=progress, proposal_scale=self.push)

    def run(self, prior, reward, *, num, particles, nfe, lam, seeds, cond, progress=False):
        res = self.particles(prior, reward, lam, K=particles, steps=nfe, seeds=seeds, cond=cond, progress=progress)
        res.info["reward"] = reward(res.samples)
        return res
