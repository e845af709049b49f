"""Training-free guidance with any differentiable reward read through x0-hat: Universal
Guidance's forward guidance and its recurrence (Bansal et al. 2023, "Universal Guidance for
Diffusion Models").

Forward guidance [Universal Guidance Eq. 6] replaces the noise prediction by
``eps' = eps + s(t) sqrt(1 - abar_t) grad_z l(c, f(x0_hat(z)))``: the gradient of a loss of a
*clean-data* network ``f`` (a classifier, a reward) evaluated at the denoised estimate, taken
through the denoiser.  In canonical space (DESIGN.md) with the loss ``-w r`` this is

    D'(y, s) = D(y, s) + s^2 w J^T grad r(D(y, s)),     J = dD/dy              [UG Eq. 6]

:class:`UniversalGuidance`, a :class:`~diffsolve.guidance.VJPGuided` (one VJP per call, counted
in ``vjps``).  Recurrence ("self-recurrence", time travel) [UG Alg. 1, lines 4-9] repeats each
step k times: after the step s_i -> s_{i+1} the state is re-noised back to s_i,

    y_i' = y_{i+1} + sqrt(s_i^2 - s_{i+1}^2) eps',   eps' ~ N(0, I)                [UG Alg. 1 l. 8]

(the canonical form of ``z_t = sqrt(a_t / a_{t-1}) z_{t-1} + sqrt(1 - a_t / a_{t-1}) eps'``) and
the step is taken again from it; the k-th result is kept.  :class:`Recurrent` wraps any
fixed-grid solver so: every repetition's calls are counted by the driver (k times the
solver's NFE).  The re-noising draws come from the run's per-sample seeds.

    >>> import torch, diffsolve
    >>> from diffsolve.rewards import Linear
    >>> g = diffsolve.exact_model("gmm-2d")
    >>> ug = UniversalGuidance(g, Linear(torch.tensor([1.0, 0.0])), scale=2.0)
    >>> res = diffsolve.sample(ug, torch.randn(8, 2, dtype=torch.float64), solver=Recurrent("dpm++2m", k=3), nfe=15)
    >>> res.nfe, ug.vjps                 # 5 steps, each taken 3 times, one VJP per call
    (15, 15)
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor

from ..checks import check_int, check_number
from ..rewards import Reward, as_reward
from ..solvers.base import NFEError, Solver, SolverState, get_solver
from .gradient import VJPGuided

__all__ = ["UniversalGuidance", "Recurrent"]


class UniversalGuidance(VJPGuided):
    """Forward universal guidance ``D + s^2 w J^T grad r(D)`` [UG Eq. 6] for a differentiable
    :class:`~diffsolve.rewards.Reward` ``r`` on clean data (e.g.
    :func:`diffsolve.models.verifier.classifier_reward`); ``scale`` w >= 0 (finite).  One VJP
    per call, counted in ``vjps`` (reset per run by :class:`~diffsolve.guidance.VJPGuided`); ``clip`` as
    :class:`~diffsolve.guidance.VJPGuided`."""

    def __init__(self, inner, reward: Reward, scale: float, clip: tuple[float, float] | None = None):
        self.reward = as_reward(reward)
        if not self.reward.differentiable:
            raise TypeError(f"UniversalGuidance needs a differentiable reward; {self.reward.name!r} is not")
        self.scale = check_number("UniversalGuidance", "scale", scale, 0)
        super().__init__(inner, self._covector, clip)

    def _covector(self, x0: Tensor, s: Any) -> Tensor:
        return self.scale * self.reward.grad(x0)

    def __repr__(self) -> str:
        return f"UniversalGuidance(reward={self.reward.name!r}, scale={self.scale}, inner={self.inner!r})"


#: the draw index of the re-noising noise, kept apart from the draws a solver makes itself
_RENOISE_DRAW = 1_000


class Recurrent(Solver):
    """Universal Guidance's recurrence around a fixed-grid solver: each step is taken ``k`` times,
    re-noising the result back to the step's starting level in between [UG Alg. 1]; the
    repetitions restart from the state before the step (its history included), so a multistep
    solver's memory stays that of the accepted steps.  NFE = k x the solver's; ``nfe`` passed
    to :func:`diffsolve.sample` must be a multiple of k.  Stochastic (it draws noise): the run's
    per-sample seeds make it reproducible.  Adaptive solvers are refused."""

    stochastic = True

    def __init__(self, solver: str | Solver = "dpm++2m", k: int = 2, **options: Any):
        self.inner = get_solver(solver, **options)
        if self.inner.adaptive:
            raise ValueError(f"Recurrent repeats fixed steps; solver {self.inner.name!r} is adaptive (its steps "
                             f"choose their own sizes); accepted: any fixed-grid solver")
        self.k = check_int("Recurrent", "k", k, minimum=1)
        self.name = f"{self.inner.name}+recurrence{self.k}"  # type: ignore[misc]
        self.order = self.inner.order  # type: ignore[misc]
        self.evals_per_step = self.k * self.inner.evals_per_step  # type: ignore[misc]
        self.nfe_rule = f"{self.k} x ({self.inner.nfe_rule})"  # type: ignore[misc]

    def step_cost(self, i: int, n_steps: int, final_zero: bool) -> int:
        return self.k * self.inner.step_cost(i, n_steps, final_zero)

    def nfe_for_steps(self, n_steps: int, final_zero: bool = True) -> int:
        return self.k * self.inner.nfe_for_steps(n_steps, final_zero)

    def _per_pass(self, nfe: int) -> int:
        if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1 or nfe % self.k:
            near = max(nfe - nfe % self.k, self.k) if isinstance(nfe, int) else self.k
            raise NFEError(f"solver {self.name!r} takes each step {self.k} times: nfe must be a positive multiple "
                           f"of {self.k}, got {nfe!r}; nearest: {near} or {near + self.k}")
        return nfe // self.k

    def steps_for_nfe(self, nfe: int, final_zero: bool = True) -> int:
        return self.inner.steps_for_nfe(self._per_pass(nfe), final_zero)

    def for_nfe(self, nfe: int, final_zero: bool = True) -> "Solver":
        inner = self.inner.for_nfe(self._per_pass(nfe), final_zero)
        return self if inner is self.inner else Recurrent(inner, self.k)

    def init(self, y: Tensor, sigmas: Tensor, noise=None) -> SolverState:
        if noise is None:
            raise ValueError(f"solver {self.name!r} re-noises and needs a noise source (pass seeds=...)")
        return self.inner.init(y, sigmas, noise)

    def step(self, state: SolverState, denoise) -> SolverState:
        s_i, s_next = state.s, state.s_next
        up = math.sqrt(max(s_i * s_i - s_next * s_next, 0.0))
        new = self.inner.step(state, denoise)
        for n in range(1, self.k):
            eps = state.noise.normal(step=state.i, like=new.y, draw=_RENOISE_DRAW + n)
            new = self.inner.step(state.replace(y=new.y + up * eps), denoise)   # [UG Alg. 1 l. 8]
        return new

    def grid_warning(self, grid: tuple[float, ...]) -> str | None:
        return self.inner.grid_warning(grid)
