"""Noise searches of "Inference-Time Scaling for Diffusion Models beyond Scaling Denoising
Steps" (Ma, Tong, Jia, Hu, Su, Zhang, Yang, Li, Jaakkola, Jia & Xie, 2025), Sec. 3.1: the
deterministic ODE sampler maps a starting noise to a sample, the verifier (a
:class:`~diffsolve.rewards.Reward`) scores the sample, and the search looks for a better noise.

* ``random-search`` [Ma et al. Sec. 3.1, "Random Search"]: N starting noises per sample, each
  solved by the ODE sampler, the highest reward kept.  It *is* best-of-N with ``select="max"``
  and a deterministic solver: :class:`RandomSearch` subclasses
  :class:`~diffsolve.steer.bon.BestOfN` and changes only its name, paper and defaults.
* ``zero-order`` [Ma et al. Sec. 3.1, "Zero-Order Search"]: a local search around a *pivot*
  noise.  The pivot starts as the sample's own noise (``NoiseSource.initial([seed])``: the base
  sampler's noise for that seed, so round 0 is the base sample); every iteration draws N
  neighbours

      n_k = sqrt(d) (n + step z_k) / ||n + step z_k||,   z_k ~ N(0, I)     (normalise="sqrt-d")
      n_k = n + step z_k                                                  (normalise="none")

  solves each with the ODE sampler and moves the pivot to the best neighbour when its reward
  beats the pivot's (strictly).  The paper keeps neighbours in a ball of radius ``step`` around
  the pivot; here ``z_k`` is Gaussian, so ``||n_k - n|| ~ step sqrt(d)`` (``step`` is relative to
  the noise's own scale sqrt(d)), and by default the candidate is put back on the sphere of
  the typical norm sqrt(d), so that a chain of moves cannot inflate the noise past what the
  sampler was trained on (n + step z alone has norm ~ sqrt((1 + step^2) d), growing with every
  move).  The starting pivot is left as drawn (its sample is the base sampler's).
  The z_k of iteration t are drawn from the candidate slot's seed (sample seed, k) at step t: a
  round without improvement is followed by *different* neighbours of the same pivot, so the
  search never stalls on a pivot.  ``res.nfe = (1 + iterations N) nfe`` (the pivot solved once,
  N candidates per round).

Both maximise the reward: ``lam`` plays no part (the maximum of lam r is the maximum of r).

    >>> import torch, diffsolve
    >>> from diffsolve.rewards import Linear
    >>> g = diffsolve.exact_model("gmm-2d")
    >>> res = diffsolve.steer(g, Linear(torch.tensor([2.0, 0.0])), "zero-order", num=3, particles=4, nfe=10,
    ...                       iterations=3)
    >>> res.nfe, res.info["pivot_reward"].shape       # (1 + 3 x 4) x 10; rounds 0..3 x samples
    (130, torch.Size([4, 3]))
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..checks import check_choice, check_int, check_number
from ..noise import NoiseSource
from ..sample import sample
from .base import SteerMethod, check_deterministic, register, repeat_cond
from .bon import BestOfN
from .particles import particle_seeds

__all__ = ["RandomSearch", "ZeroOrder", "neighbours", "NORMALISE"]

NORMALISE = ("sqrt-d", "none")
_DRAW = 2000  # the neighbours' draw index (apart from any solver's and the resampling draws)


@register
class RandomSearch(BestOfN):
    """Random search [Ma et al. 2025, Sec. 3.1]: best-of-N over starting noises, each solved by
    a deterministic ODE sampler, the verifier's maximum kept.  Options: ``solver`` (default
    ``"dpm++2m"``; stochastic solvers are refused: use ``best-of-n`` for them), ``schedule``
    (default ``"karras"``) and ``solver_options``.

    >>> import torch, diffsolve
    >>> from diffsolve.rewards import Linear
    >>> g = diffsolve.exact_model("gmm-2d")
    >>> res = diffsolve.steer(g, Linear(torch.tensor([2.0, 0.0])), "random-search", num=2, particles=8, nfe=10)
    >>> res.nfe, res.info["candidates"]
    (80, 8)
    """

    name = "random-search"
    paper = ("Inference-Time Scaling for Diffusion Models beyond Scaling Denoising Steps (Ma et al. 2025), "
             "Sec. 3.1 random search")
    cost = "N x nfe network calls (N starting noises, each solved by the ODE sampler)"
    exact = False  # the verifier's maximum, not the tilted target

    def __init__(self, solver: str = "dpm++2m", schedule: str = "karras", solver_options: dict | None = None):
        super().__init__(select="max", solver=check_deterministic("random-search", solver), schedule=schedule,
                         solver_options=solver_options)


def neighbours(pivot: Tensor, seeds: list[int], N: int, iteration: int, step: float,
               normalise: str = "sqrt-d") -> Tensor:
    """N neighbours of each pivot noise (rows ``b N .. b N + N - 1`` are those of ``pivot[b]``):
    ``n + step z`` with ``z`` drawn from the seed of slot (``seeds[b]``, k) at ``iteration``,
    rescaled to norm sqrt(d) when ``normalise="sqrt-d"``.

    >>> p = torch.zeros(1, 4, dtype=torch.float64)
    >>> a, b = neighbours(p, [0], 2, 0, 0.5), neighbours(p, [0], 2, 1, 0.5)
    >>> a.norm(dim=1).tolist(), bool((a != b).all())    # on the sphere; fresh every iteration
    ([2.0, 2.0], True)
    """
    rows = pivot.repeat_interleave(N, 0)
    z = NoiseSource(particle_seeds(seeds, N)).normal(iteration, rows, _DRAW)
    cand = rows + step * z
    if normalise == "sqrt-d":
        d = math.prod(cand.shape[1:])
        norm = cand.flatten(1).norm(dim=1).clamp_min(torch.finfo(cand.dtype).tiny)
        cand = cand * (math.sqrt(d) / norm).reshape(-1, *[1] * (cand.ndim - 1))
    return cand


@register
class ZeroOrder(SteerMethod):
    """Zero-order search [Ma et al. 2025, Sec. 3.1]: N neighbours of a pivot noise per
    iteration, the pivot moved to the best one when it improves the reward.  Options:

    * ``iterations`` (default 4): search rounds;
    * ``step`` (default 0.5): the neighbours' spread, ``n + step z`` with z ~ N(0, I);
    * ``normalise`` (default ``"sqrt-d"``: rescale each neighbour to norm sqrt(d); ``"none"``);
    * ``solver`` (default ``"dpm++2m"``, deterministic), ``schedule`` (default ``"karras"``)
      and ``solver_options``.

    ``res.info``: ``pivot_reward`` ((iterations + 1, num): the pivot's reward after each round,
    row 0 the starting pivot's, non-decreasing), ``moved`` ((iterations, num) bools: the rounds
    that moved the pivot), ``best_candidate`` ((iterations, num): each round's best neighbour,
    improving or not), ``reward`` (the returned samples'), ``reward_calls``.
    """

    name = "zero-order"
    paper = ("Inference-Time Scaling for Diffusion Models beyond Scaling Denoising Steps (Ma et al. 2025), "
             "Sec. 3.1 zero-order search")
    cost = "(1 + iterations x N) x nfe network calls (the pivot once, N neighbours per iteration)"
    needs = ()
    exact = False

    def __init__(self, iterations: int = 4, step: float = 0.5, normalise: str = "sqrt-d", solver: str = "dpm++2m",
                 schedule: str = "karras", solver_options: dict | None = None):
        self.iterations = check_int("zero-order", "iterations", iterations, minimum=1, maximum=100_000)
        self.step = check_number("zero-order", "step", step, 0, low_open=True)
        self.normalise = check_choice("zero-order", "normalise", normalise, NORMALISE)
        self.solver = check_deterministic("zero-order", solver)
        self.schedule, self.solver_options = schedule, dict(solver_options or {})

    def _solve(self, prior, noise, nfe, cond, progress):
        return sample(prior, noise, solver=self.solver, nfe=nfe, schedule=self.schedule, cond=cond,
                      progress=progress, **self.solver_options)

    def run(self, prior, reward, *, num, particles, nfe, lam, seeds, cond, progress=False):
        N = particles
        pivot = NoiseSource.initial(seeds, prior.shape)                   # [Ma et al. Sec. 3.1 step 1]
        res = self._solve(prior, pivot, nfe, cond, progress)
        x, total = res.samples, res.nfe
        r = reward(x).to(torch.float64)
        calls = r.shape[0]
        history, moved, best_seen = [r.clone()], [], []
        rows = torch.arange(num) * N
        cond_n = repeat_cond(cond, num, N)
        for t in range(self.iterations):
            cand = neighbours(pivot, seeds, N, t, self.step, self.normalise)  # step 2: the pivot's neighbourhood
            out = self._solve(prior, cand, nfe, cond_n, progress)            # step 3: solve and verify
            total += out.nfe * N
            rc = reward(out.samples).to(torch.float64)
            calls += rc.shape[0]
            best = rows + rc.reshape(num, N).argmax(1)                      # step 4: the best candidate ...
            better = rc[best] > r                                            # ... becomes the pivot if it improves
            pivot = torch.where(better.reshape(-1, *[1] * (pivot.ndim - 1)).to(pivot.device), cand[best], pivot)
            x = torch.where(better.reshape(-1, *[1] * (x.ndim - 1)).to(x.device), out.samples[best], x)
            r = torch.where(better, rc[best], r)
            history.append(r.clone())
            moved.append(better)
            best_seen.append(rc[best])
        res.samples, res.nfe = x, total
        res.info.update(reward=r, reward_calls=calls, candidates=N, iterations=self.iterations, step=self.step,
                        normalise=self.normalise, pivot_reward=torch.stack(history), moved=torch.stack(moved),
                        best_candidate=torch.stack(best_seen), pivot_noise=pivot, solver=res.solver)
        return res
