"""Rollover budget forcing for flow models (Kim, Yoon, Hwang & Sung, 2025, "Inference-Time
Scaling for Flow Models via Stochastic Generation and Rollover Budget Forcing"; tagged [RBF]).

**Stochastic generation** [RBF Sec. 4.1, SDE conversion].  A flow's velocity gives the
denoiser in canonical space (y = x0 + s eps, D(y, s) = E[x0 | y]), so any stochastic solver
samples a flow: the reverse SDE with a tunable diffusion coefficient is ``ddim-eta``'s eta
(eta = 0: the flow ODE; eta = 1: the ancestral/DDPM step, the discretised reverse SDE
[Score SDE Eq. 6]) or ``euler-maruyama``.

**Interpolant conversion** [RBF Sec. 4.2, linear -> VP].  The paper re-times the linear
interpolant alpha_t = 1 - t, sigma_t = t onto the VP interpolant with the same signal-to-noise
ratio.  In canonical variables the SNR *is* the level, s = sigma / alpha, so the conversion is
a choice of grid: ``grid="vp"`` takes the levels s_VP(t_k) of the VP-SDE path (beta 0.1..20,
Song et al. 2021) at uniform times t_k (clipped to the prior's trained range), ``"linear"``
those of the flow path at uniform times (no conversion), any other name a schedule of
:func:`diffsolve.make_schedule` on the prior's path.

**Rollover budget forcing** [RBF Alg. 1, Sec. 5].  The total budget of network calls per
sample, B = particles x nfe, is spread evenly over the denoising steps.  One call makes
x0-hat at the start (y_0, s_0), scored r_0 = r(x0-hat_0).  At step i (s_i -> s_{i+1} > 0) the
step's quota q_i plus the rollover R is available; candidates

    y^j_{i+1} ~ p(y_{i+1} | y_i)      (one stochastic solver step, fresh noise per candidate)
    x0-hat^j  = D(y^j_{i+1}, s_{i+1})  (one network call; the next step reuses it)

are drawn one at a time until r(x0-hat^j) > r_i (the current best) or the available calls
are used; the best candidate is kept and the unused calls roll over to the next step.  At the
last step with s_{i+1} > 0 every remaining call is drawn (nothing is left to roll over to), so
every sample spends *exactly* B calls; the step into s = 0 is the solver's deterministic
denoising limit of the kept state (no call).  With particles = 1 every step draws one
candidate: the base stochastic sampler itself (bit for bit: the first candidate of a step
draws its noise from the sample's own seed, candidate j >= 1 from ``particle_seeds``).  Batching: the samples draw their j-th
candidate together; samples that accepted or ran out wait (no call is made for them).

Rollover budget forcing searches for high reward: it does not sample the tilted target
(``lam`` is not used; ``exact = False``).

    >>> import torch, diffsolve
    >>> from diffsolve.rewards import Linear
    >>> m = diffsolve.load("moons")
    >>> res = diffsolve.steer(m, Linear(torch.tensor([1.0, 0.0])), "rbf", num=4, particles=4, nfe=10)
    >>> res.nfe, int(res.info["spent"].sum(1)[0]) + 1     # 4 x 10 calls: one at s_0 + candidates
    (40, 40)
    >>> res.info["quota"]
    [5, 5, 5, 4, 4, 4, 4, 4, 4]
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..checks import check_choice, check_int
from ..noise import NoiseSource
from ..paths import get_path
from ..sample import SampleResult
from ..schedules import SCHEDULES, make_schedule
from ..solvers import SolverState, get_solver
from .base import SteerMethod, register
from .particles import particle_seeds

__all__ = ["RBF", "GRIDS", "SOLVERS", "rbf_grid", "quotas"]

#: the grids (``"vp"``: the interpolant conversion; ``"linear"``: the flow's own uniform time)
GRIDS = ("vp", "linear") + tuple(SCHEDULES)
#: the stochastic solvers whose step makes one call, at (y_i, s_i): the candidate's call is reused
SOLVERS = ("ddim-eta", "ddpm", "euler-a", "euler-maruyama")


def rbf_grid(kind: str, n_steps: int, path) -> Tensor:
    """The level grid for ``n_steps`` steps to s = 0: ``"vp"`` uniform in the VP-SDE path's
    time [RBF Sec. 4.2], ``"linear"`` uniform in the flow path's time, else the named schedule
    on ``path``; the time grids are clipped to ``path``'s trained range.

    >>> [round(v, 3) for v in rbf_grid("vp", 3, None).tolist()]
    [152.167, 3.422, 0.01, 0.0]
    """
    if kind in ("vp", "linear"):
        ref = get_path("vp-linear" if kind == "vp" else "flow")
        lo, hi = ref.s_min, ref.s_max
        if path is not None:
            lo, hi = max(lo, path.s_min), min(hi, path.s_max)
        return make_schedule("time", n_steps, path=ref, s_min=lo, s_max=hi, final="zero")
    return make_schedule(kind, n_steps, path=path, final="zero")


def quotas(total: int, n_steps: int) -> list[int]:
    """Calls per candidate step: ``total`` spread evenly over ``n_steps`` steps, the remainder
    to the earliest steps [RBF Sec. 5: uniform allocation].

    >>> quotas(39, 9)
    [5, 5, 5, 4, 4, 4, 4, 4, 4]
    """
    q, rem = divmod(total, n_steps)
    return [q + (1 if i < rem else 0) for i in range(n_steps)]


def _cond_rows(cond: dict[str, Any], rows: Tensor, num: int) -> dict[str, Any]:
    return {k: v[rows.to(v.device)] if isinstance(v, Tensor) and v.ndim and v.shape[0] == num else v
            for k, v in cond.items()}


@register
class RBF(SteerMethod):
    """Rollover budget forcing on a stochastic sampler of a flow (see the module docstring).
    Options:

    * ``solver`` (default ``"ddim-eta"``): one of ``ddim-eta``, ``ddpm``, ``euler-a``,
      ``euler-maruyama`` (one call per step at the step's start, which the candidate's scoring
      call provides); its diffusion coefficient through ``solver_options`` (e.g. ``{"eta": 0.5}``);
    * ``grid`` (default ``"vp"``): ``"vp"`` (the paper's interpolant conversion), ``"linear"``
      (uniform flow time) or a schedule name on the prior's path.
    """

    name = "rbf"
    paper = ("Inference-Time Scaling for Flow Models via Stochastic Generation and Rollover Budget Forcing "
             "(Kim et al. 2025)")
    cost = "particles x nfe network calls exactly (candidates until one improves; unused calls roll over)"
    needs = ("stochastic",)
    exact = False

    def __init__(self, solver: str = "ddim-eta", grid: str = "vp", solver_options: dict | None = None):
        self.solver = check_choice("rbf", "solver", solver, SOLVERS)
        self.grid = check_choice("rbf", "grid", grid, GRIDS)
        self.solver_options = dict(solver_options or {})
        self.slv = get_solver(self.solver, **self.solver_options)  # refuses a bad option now

    def run(self, prior, reward, *, num, particles, nfe, lam, seeds, cond, progress=False):
        N = nfe
        if N < 2:
            raise ValueError(f"rbf: nfe={nfe!r} is not accepted; accepted: an integer >= 2 (one step with "
                             f"candidates before the final denoising step)")
        path = getattr(prior, "path", None)
        sigmas = rbf_grid(self.grid, N, path)
        if path is not None:
            path.check_s(sigmas[:-1], "rbf grid level")
        grid = tuple(sigmas.tolist())
        budget = particles * N
        quota = quotas(budget - 1, N - 1)                                   # [RBF Sec. 5] uniform allocation
        y = NoiseSource.initial(seeds, prior.shape) * grid[0]
        cond = prior.check(y, cond)
        prior.prepare(sigmas, y.dtype)
        calls = torch.zeros(num, dtype=torch.long)
        levels: list[float] = []
        rcalls = 0

        def denoise(rows: Tensor, yr: Tensor, s: float) -> Tensor:
            out = prior(yr, s, **_cond_rows(cond, rows, num))
            if not bool(torch.isfinite(out).all()):
                raise FloatingPointError(f"rbf: the prior returned non-finite values at level s={s:g}")
            calls[rows] += 1
            levels.append(s)
            return out

        everyone = torch.arange(num)
        D = denoise(everyone, y, grid[0])                                   # x0-hat at (y_0, s_0)
        r_cur = reward(D).to(torch.float64)
        rcalls += num
        carry = torch.zeros(num, dtype=torch.long)
        rolled = torch.zeros(num, N - 1, dtype=torch.long)
        spent = torch.zeros(num, N - 1, dtype=torch.long)
        accepted = torch.zeros(num, N - 1, dtype=torch.bool)
        for i in range(N - 1):                                              # [RBF Alg. 1] the steps
            last = i == N - 2
            avail = quota[i] + carry                                        # quota + rollover
            best_r = torch.full((num,), -torch.inf, dtype=torch.float64)
            best_y, best_D = y.clone(), D.clone()
            drawn = torch.zeros(num, dtype=torch.long)
            done = torch.zeros(num, dtype=torch.bool)
            j = 0
            while True:
                rows = ((drawn < avail) & ~done).nonzero().flatten()
                if rows.numel() == 0:
                    break
                cand_seeds = [seeds[b] if j == 0 else particle_seeds([seeds[b]], j)[-1] for b in rows.tolist()]
                st = SolverState(y=y[rows], i=i, sigmas=sigmas, noise=NoiseSource(cand_seeds), grid=grid)
                Dr = D[rows]
                yc = self.slv.step(st, lambda _y, _s: Dr).y                 # y^j ~ p(y_{i+1} | y_i)
                Dc = denoise(rows, yc, grid[i + 1])                         # x0-hat^j (reused next step)
                rc = reward(Dc).to(torch.float64)                           # r(x0-hat^j)
                rcalls += rows.numel()
                drawn[rows] += 1
                better = rc > best_r[rows]                                  # keep the best candidate
                keep = rows[better]
                best_r[keep], best_y[keep], best_D[keep] = rc[better], yc[better], Dc[better]
                if not last:                                                # stop at the first improvement
                    up = rc > r_cur[rows]
                    done[rows[up]] = True
                    accepted[rows[up], i] = True
                j += 1
            carry = avail - drawn                                           # [RBF Alg. 1] rollover
            spent[:, i], rolled[:, i] = drawn, carry
            y, D, r_cur = best_y, best_D, best_r
        st = SolverState(y=y, i=N - 1, sigmas=sigmas, noise=NoiseSource(list(seeds)), grid=grid)
        out = self.slv.step(st, lambda _y, _s: D).y                         # the step into s = 0: no call
        r_out = r_cur if torch.equal(out, D) else reward(out).to(torch.float64)
        if not torch.equal(out, D):
            rcalls += num
        if not bool((calls == budget).all()):
            raise RuntimeError(f"internal error: rbf spent {sorted(set(calls.tolist()))} calls per sample, "
                               f"its budget is {budget}")
        info = dict(reward=r_out, reward_calls=rcalls, spent=spent, quota=quota, accepted=accepted,
                    rollover=rolled, solver=self.solver, grid=self.grid)
        return SampleResult(samples=out, nfe=int(calls[0]), sigmas=sigmas, solver=self.solver,
                            eval_levels=torch.tensor(levels, dtype=torch.float64), info=info)
