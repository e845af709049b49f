"""Search over paths (Ma, Tong, Jia, Hu, Su, Zhang, Yang, Li, Jaakkola, Jia & Xie, 2025,
"Inference-Time Scaling for Diffusion Models beyond Scaling Denoising Steps", Sec. 3.1).

The base sampler's grid s_0 > s_1 > ... > s_n = 0 (the ODE solver's plan for ``nfe`` calls)
is cut at L + 1 stops  i_0 < i_1 < ... < i_L = n  (``levels`` = L search rounds, stops evenly
spaced in grid steps: i_j = round((j + 1) n / (L + 1))).  Per returned sample [Ma et al.
Sec. 3.1, search over paths, steps 1-4]:

1. N starting noises (slot seeds as in best-of-N), solved by the ODE sampler from s_0 down to
   s_{i_0}: N states y at the first search level;
2. round j = 0..L-1, from level s = s_{i_j}: each of the N kept states gets M = ``width``
   forward-noised copies, raised to the level s' = s_{i_j - renoise} (``renoise`` grid steps
   back up the same grid) by the forward process in canonical space,

       y' = y + sqrt(s'^2 - s^2) z,   z ~ N(0, I)  (slot (seed, k) of the sample, step j);

3. each copy is solved by the ODE sampler from s' back down, past s, to the next stop
   s_{i_{j+1}}, and scored by the reward of its denoised estimate x0-hat = D(y, s_{i_{j+1}}) (one
   extra network call per copy, counted: the next solver step would make it at the *re-noised*
   state, not at this one); at the last stop (s = 0) the sample itself is scored, with no call.
   The N best of the N M copies (over all parents) are kept;
4. after the last round the best of the N kept samples (= the best of the last N M) is returned.

Like every search it maximises the reward: ``lam`` plays no part (the maximum of lam r is the
maximum of r).

Network calls per returned sample (every one counted, none estimated):

    N c(0 -> i_0) + sum_j N M [c(i_j - renoise -> i_{j+1}) + 1{i_{j+1} < n}]

with c the solver's calls on that piece of grid (steps for one-call solvers; a segment restarts a
multistep solver's history).  With dpm++2m, nfe = 20, L = 4, renoise = 1, N = 4, M = 2: 4 x 4 +
8 x 4 x 5 + 8 x 3 = 200.

    >>> import torch, diffsolve
    >>> from diffsolve.rewards import Linear
    >>> g = diffsolve.exact_model("gmm-2d")
    >>> res = diffsolve.steer(g, Linear(torch.tensor([2.0, 0.0])), "path-search", num=2, particles=4, nfe=20)
    >>> res.nfe, res.info["stops"]
    (200, [4, 8, 12, 16, 20])
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..checks import check_int
from ..counting import CountingDenoiser
from ..noise import NoiseSource
from ..sample import SampleResult, sample
from ..schedules import make_schedule
from ..solvers import get_solver
from .base import SteerMethod, check_deterministic, register, repeat_cond
from .particles import particle_seeds

__all__ = ["PathSearch", "renoise", "denoised_estimate", "search_stops"]

_DRAW = 3000  # the forward noise's draw index (apart from any solver's and the other searches' draws)


def search_stops(n_steps: int, levels: int) -> list[int]:
    """The L + 1 grid indices where the search stops: evenly spaced in steps, the last n.

    >>> search_stops(20, 4), search_stops(7, 3)
    ([4, 8, 12, 16, 20], [2, 4, 5, 7])
    """
    L1 = levels + 1
    return [((j + 1) * n_steps + L1 // 2) // L1 for j in range(L1)]


def renoise(y: Tensor, s: float, s_up: float, z: Tensor) -> Tensor:
    """The forward process in canonical space from level s up to s_up >= s:
    ``y + sqrt(s_up^2 - s^2) z`` (y = x + s eps becomes x + s_up eps').

    >>> renoise(torch.zeros(1, 2), 3.0, 5.0, torch.ones(1, 2)).tolist()
    [[4.0, 4.0]]
    """
    if s_up < s:
        raise ValueError(f"renoise goes up in noise: s_up={s_up} < s={s}")
    return y + math.sqrt(s_up * s_up - s * s) * z


def denoised_estimate(prior, y: Tensor, s: float, cond: dict) -> tuple[Tensor, int]:
    """x0-hat = D(y, s) of a batch at one level through the counted denoiser: (x0-hat, calls)."""
    cond = prior.check(y, cond)
    prior.prepare(torch.tensor([s], dtype=torch.float64), y.dtype)
    den = CountingDenoiser(prior, cond)
    x0 = den(y, float(s))
    return x0, den.calls


@register
class PathSearch(SteerMethod):
    """Search over paths [Ma et al. 2025, Sec. 3.1]: N ODE states per sample, widened by
    forward noise and narrowed by the reward of x0-hat at L search levels.  Options:

    * ``width`` M (default 2): forward-noised copies of each kept state per round;
    * ``levels`` L (default 4): search rounds (the grid is cut at L + 1 evenly spaced stops, the
      last at s = 0; the solver's plan for ``nfe`` needs at least L + 1 steps);
    * ``renoise`` (default 1): how far a copy is re-noised, in grid steps back up the base grid
      (from s_{i_j} to s_{i_j - renoise}; at least 1, at most the first stop i_0);
    * ``solver`` (default ``"dpm++2m"``, deterministic), ``schedule`` (default ``"karras"``) and
      ``solver_options``.

    ``res.info``: ``stops`` (grid indices), ``search_levels`` (their noise levels), ``renoise_levels``
    (s' of each round), ``kept_reward`` ((L, num): the best kept score after each round; the
    last is the returned sample's reward), ``final_rewards`` ((num, N): the kept samples' rewards,
    best first), ``score_calls`` (the extra x0-hat calls per sample), ``reward``,
    ``reward_calls``.  ``eval_levels`` lists the batched calls in the order made.
    """

    name = "path-search"
    paper = ("Inference-Time Scaling for Diffusion Models beyond Scaling Denoising Steps (Ma et al. 2025), "
             "Sec. 3.1 search over paths")
    cost = ("N x (calls to the first level) + N M x (re-solved calls + 1 x0-hat call) per round "
            "(N kept states, M copies each)")
    needs = ()
    exact = False

    def __init__(self, width: int = 2, levels: int = 4, renoise: int = 1, solver: str = "dpm++2m",
                 schedule: str = "karras", solver_options: dict | None = None):
        self.width = check_int("path-search", "width", width, minimum=1, maximum=100_000)
        self.levels = check_int("path-search", "levels", levels, minimum=1, maximum=100_000)
        self.renoise = check_int("path-search", "renoise", renoise, minimum=1, maximum=100_000)
        self.solver = check_deterministic("path-search", solver)
        self.schedule, self.solver_options = schedule, dict(solver_options or {})

    def plan(self, prior, nfe: int) -> tuple[Tensor, list[int]]:
        """The base sampler's grid for ``nfe`` calls and the search stops on it."""
        slv = get_solver(self.solver, **self.solver_options).for_nfe(nfe, True)
        n = slv.steps_for_nfe(nfe, True)
        if n < self.levels + 1:
            raise ValueError(f"path-search: levels={self.levels} needs a grid of at least {self.levels + 1} steps "
                             f"(one to the first search level, one per round); solver {self.solver!r} at nfe={nfe} "
                             f"takes {n}: raise nfe or lower levels")
        stops = search_stops(n, self.levels)
        if self.renoise > stops[0]:
            raise ValueError(f"path-search: renoise={self.renoise} grid steps goes above the grid's top: the first "
                             f"search level is step {stops[0]} of {n}; accepted: renoise in 1..{stops[0]}")
        grid = make_schedule(self.schedule, n, path=getattr(prior, "path", None), final="zero")
        return grid, stops

    def _solve(self, prior, y: Tensor, levels: list[float], cond: dict, progress: bool) -> SampleResult:
        return sample(prior, y, solver=self.solver, nfe=None, schedule=levels, y_start=y, cond=cond,
                      progress=progress, **self.solver_options)

    def run(self, prior, reward, *, num, particles, nfe, lam, seeds, cond, progress=False):
        N, M = particles, self.width
        grid, stops = self.plan(prior, nfe)
        g = grid.tolist()
        n = len(g) - 1
        y = g[0] * NoiseSource.initial(particle_seeds(seeds, N), prior.shape)           # step 1
        first = self._solve(prior, y, g[: stops[0] + 1], repeat_cond(cond, num, N), progress)
        y, total, levels = first.samples, first.nfe * N, [first.eval_levels]
        cond_w = repeat_cond(cond, num, N * M)
        src = NoiseSource(particle_seeds(seeds, N * M))
        kept_hist, up_levels, score_calls, reward_calls = [], [], 0, 0
        for j in range(self.levels):
            a, b = stops[j], stops[j + 1]
            up = a - self.renoise
            copies = y.repeat_interleave(M, 0)                                        # step 2: widen
            copies = renoise(copies, g[a], g[up], src.normal(j, copies, _DRAW))
            out = self._solve(prior, copies, g[up: b + 1], cond_w, progress)         # step 3: solve past s
            total += out.nfe * N * M
            levels.append(out.eval_levels)
            if b < n:
                x0, c = denoised_estimate(prior, out.samples, g[b], cond_w)           # x0-hat at the new level
                total += c * N * M
                score_calls += c * N * M
                levels.append(torch.tensor([g[b]] * c, dtype=torch.float64))
            else:
                x0 = out.samples
            score = reward(x0).to(torch.float64).reshape(num, N * M)
            reward_calls += score.numel()
            top, idx = score.topk(N, dim=1)                                           # keep the N best
            keep = (idx + (N * M) * torch.arange(num, device=idx.device)[:, None]).flatten()
            y = out.samples[keep.to(out.samples.device)]
            kept_hist.append(top[:, 0])
            up_levels.append(g[up])
        best = torch.arange(num) * N                                                 # step 4: topk is sorted
        res = SampleResult(samples=y[best.to(y.device)], nfe=total, sigmas=grid, solver=first.solver,
                           eval_levels=torch.cat(levels), info={})
        res.info.update(reward=top[:, 0], reward_calls=reward_calls, candidates=N, width=M,
                        stops=stops, search_levels=[g[i] for i in stops], renoise_levels=up_levels,
                        kept_reward=torch.stack(kept_hist), final_rewards=top, score_calls=score_calls,
                        solver=first.solver)
        return res
