"""TDS: twisted sequential Monte Carlo (Wu, Trippe, Naesseth, Blei & Cunningham, NeurIPS 2023,
"Practical and Asymptotically Exact Conditional Sampling in Diffusion Models").

K particles per posterior sample follow the prior's DDPM chain (our ``ddpm`` solver step in
canonical space, y' = m(y) + s_up z) *twisted* towards the measurement, and are reweighted so
that as K grows the selected particle is an exact draw from the posterior of that chain.

Twisting function [TDS Eq. 8] at level s, with x0-hat = D(y, s):

    log p~_s(y_meas | y) = -|y_meas - A D(y, s)|^2 / (2 (sigma_y^2 + r_s^2)),
    r_s^2 = v s^2 / (v + s^2)   (the variance of x0 given y for data of variance v, ``data_var``)

Proposal [TDS Eq. 9]: the DDPM step from the twisted denoiser (twisted score = score +
grad log p~, i.e. ``D~ = D + s^2 grad_y log p~_s``; one vector-Jacobian product through the
network per step): m~ = the step's mean from D~, same variance s_up^2.
Incremental weight [TDS Eq. 10, Alg. 1] of the move y_i -> y_{i+1}:

    log w += log N(y_{i+1}; m(y_i), s_up^2) - log N(y_{i+1}; m~(y_i), s_up^2)
             + log p~_{i+1}(y_meas | y_{i+1}) - log p~_i(y_meas | y_i)

with the first weight log p~_0(y_meas | y_0), and the last twist replaced by the likelihood
itself at the last level s_N (the chain ends at the schedule's s_min, not at 0: the last state
is the sample, ``log N(y_meas; A y_N, sigma_y^2 + s_N^2)``).  Weights live in log space
(:mod:`diffsolve.inverse.resample`); particles are resampled [TDS Alg. 1] when a group's ESS
drops below ``ess_threshold`` K, by re-indexing the solver state (sample, history, noise
seeds: :meth:`SolverState.reindex`) in a hook; at the end one particle per group is drawn by
its weight.

Where the pieces live: the twisted proposal is the guidance wrapper
(:class:`~.guidance.VJPGuided`) with the twist's gradient as its covector (:class:`Twist`)
under the ``ddpm`` solver; the weights and resampling are a hook (:class:`TwistedWeights`)
that reads x0-hat and log p~ the twist kept at the step's start, so each step costs one forward
call and one VJP per particle.  Particles start from their own seeded noise (seeds derived from
each sample's seed, :func:`particle_seeds`); the ``noise`` given to the method is not used.
``res.nfe`` = (forward calls + VJPs) x K, counted; ``res.info["vjp"]`` the VJPs.

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

import math

import torch
from torch import Tensor

from ...checks import check_choice, check_int, check_number
from ...sample import sample
from ...noise import NoiseSource
from ...schedules import SCHEDULES, make_schedule
from ...solvers.euler import ddim_update
from ...solvers.stochastic import ancestral_levels
from ...tensors import bc
from ..problem import Problem
from ..resample import SCHEMES, ancestors, ess, normalise, uniforms
from .base import InverseMethod, register
from .guidance import VJPGuided, calls_per_step_budget

__all__ = ["TDS", "Twist", "TwistedWeights", "particle_seeds"]

_SEED_MOD = 1 << 63
_DRAW = 1000  # the resampling uniforms' draw index (apart from any solver's draws)


def particle_seeds(seeds: list[int], K: int) -> list[int]:
    """K seeds per sample seed (particle k of sample b: ``(seed_b * 1000003 + k + 1) mod 2**63``).

    >>> particle_seeds([0, 5], 2)
    [1, 2, 5000016, 5000017]
    """
    return [(s * 1_000_003 + k + 1) % _SEED_MOD for s in seeds for k in range(K)]


class Twist:
    """The twisting function [TDS Eq. 8] as the covector of a guidance wrapper:
    ``grad_x0 log p~_s = A^T (y_meas - A x0) / (sigma_y^2 + r_s^2)``, so that
    :class:`~.guidance.VJPGuided` makes ``D~ = D + s^2 J^T grad_x0 log p~_s`` [TDS Eq. 9] with one
    counted VJP.  Each call keeps x0-hat and ``log p~_s`` (up to a constant shared by every
    particle) of the batch it saw, for the weights."""

    def __init__(self, problem: Problem, data_var: float):
        self.problem, self.data_var = problem, data_var
        self.x0: Tensor | None = None
        self.log: Tensor | None = None

    def variance(self, s) -> Tensor | float:
        """sigma_y^2 + r_s^2 with r_s^2 = v s^2 / (v + s^2) (a float, or (B,) for per-row levels)."""
        s2 = s * s
        return self.problem.sigma_y ** 2 + self.data_var * s2 / (self.data_var + s2)

    def __call__(self, x0: Tensor, s) -> Tensor:
        var = self.variance(s)
        r = self.problem.residual(x0)
        self.x0, self.log = x0, -r.flatten(1).pow(2).sum(1) / (2 * var)
        return self.problem.operator.adjoint(r) / bc(var, x0)


class TwistedWeights:
    """The hook: incremental log weights [TDS Alg. 1] and resampling on low ESS by
    re-indexing the whole solver state."""

    def __init__(self, twist: Twist, start: Tensor, K: int, seeds: list[int], scheme: str, threshold: float):
        self.twist, self.y_prev = twist, start  # the state the coming step starts from
        self.K, self.seeds, self.scheme, self.threshold = K, seeds, scheme, threshold
        self.logw: Tensor | float = 0.0  # (G, K)
        self.pending: Tensor | float = 0.0  # the last move's proposal correction, (G, K)
        self.prev: Tensor | float = 0.0  # log p~ at the previous state, (G, K)
        self.ess: list[float] = []
        self.resampled = 0

    def _groups(self, v: Tensor) -> Tensor:
        return v.reshape(-1, self.K)

    def __call__(self, ctx):
        y, d, lt = self.y_prev, self.twist.x0, self._groups(self.twist.log)  # D and log p~ at y
        s, s1, y1, dt = ctx.state.at(ctx.i - 1), ctx.s, ctx.y, ctx.x0       # D~ = the step's x0-hat
        self.logw = self.logw + lt - self.prev + self.pending                                  # [TDS Eq. 10]
        s_down, s_up = ancestral_levels(s, s1, 1.0)                  # the ddpm step's levels
        m, mt = ddim_update(y, d, s, s_down), ddim_update(y, dt, s, s_down)
        self.pending = self._groups(((y1 - mt).flatten(1).pow(2).sum(1) - (y1 - m).flatten(1).pow(2).sum(1))
                                    / (2 * s_up * s_up))              # log p(y1 | y) - log p~(y1 | y, y_meas)
        self.prev = lt
        e = ess(self.logw)
        self.ess.append(float(e.mean()))
        low = e < self.threshold * self.K
        state = ctx.state
        if ctx.i < ctx.n_steps and bool(low.any()):
            dev = self.logw.device
            u = uniforms(self.seeds, ctx.i, self.K, _DRAW, dev).to(self.logw.dtype)
            keep = torch.arange(self.K, device=dev).expand_as(self.logw)
            local = torch.where(low[:, None], ancestors(self.logw, u, self.scheme), keep)   # [TDS Alg. 1] resample
            self.pending, self.prev = self.pending.gather(1, local), self.prev.gather(1, local)
            mean = torch.logsumexp(self.logw, 1, keepdim=True) - math.log(self.K)
            self.logw = torch.where(low[:, None], mean.expand_as(self.logw), self.logw)
            self.resampled += int(low.sum())
            state = state.reindex((local + self.K * torch.arange(local.shape[0], device=dev)[:, None]).flatten())
        self.y_prev = state.y
        return state

    def final(self, y_N: Tensor, s_N: float) -> Tensor:
        """The last weights: the likelihood at the chain's last state replaces the last twist;
        one draw per group (indices into the particles of each group)."""
        p = self.twist.problem
        r = p.residual(y_N).flatten(1)
        loglik = self._groups(-(r * r).sum(1) / (2 * (p.sigma_y ** 2 + s_N * s_N)))
        self.logw = self.logw + self.pending + loglik - self.prev
        u = uniforms(self.seeds, len(self.ess) + 1, 1, _DRAW, self.logw.device).to(self.logw.dtype)
        return ancestors(self.logw, u, "multinomial")[:, 0]


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
        self.scheme = check_choice("tds", "resample", resample, SCHEMES)
        self.threshold = check_number("tds", "ess_threshold", ess_threshold, 0, 1)
        self.data_var = check_number("tds", "data_var", data_var, 0, low_open=True)
        self.schedule = check_choice("tds", "schedule", schedule, tuple(SCHEDULES))

    def run(self, prior, problem, noise, *, nfe, seeds, cond, progress=False):
        K, n = self.K, noise.shape[0]
        steps = calls_per_step_budget("tds", nfe, 2 * K, f"per step ({K} particles: a forward call and a VJP each)")
        if steps < 2:
            raise ValueError(f"tds: nfe={nfe} buys {steps} step of {K} particles; accepted: a multiple of "
                             f"2 K = {2 * K} of at least {4 * K}, or fewer particles")
        pseeds = particle_seeds(seeds, K)
        grid = make_schedule(self.schedule, steps, path=getattr(prior, "path", None), final="s_min")
        start = grid[0].item() * NoiseSource.initial(pseeds, noise.shape[1:], dtype=noise.dtype, device=noise.device)
        rep = {k: v.repeat_interleave(K, 0) if isinstance(v, Tensor) and v.shape[:1] == (n,) else v
               for k, v in cond.items()}
        twist = Twist(Problem(problem.operator, problem.y.repeat_interleave(K, 0), problem.sigma_y), self.data_var)
        twisted = VJPGuided(prior, twist)                             # the proposal [TDS Eq. 9]
        hook = TwistedWeights(twist, start, K, seeds, self.scheme, self.threshold)
        res = sample(twisted, start, solver="ddpm", nfe=steps, schedule=grid, y_start=start, seeds=pseeds, cond=rep,
                     hooks=[hook], progress=progress)
        pick = hook.final(res.samples, float(res.sigmas[-1]))
        rows = pick + K * torch.arange(n, device=pick.device)
        logw = normalise(hook.logw)
        res.samples = res.samples[rows]
        res.info.update(vjp=twisted.vjps * K, particles=K, steps=steps, forward=res.nfe * K,
                        ess=hook.ess, resampled=hook.resampled, log_weights=logw)
        res.nfe = (res.nfe + twisted.vjps) * K
        return res
