"""What tuning measures against: the model's own high-accuracy ODE solution from the tuning noise,
and the distance of a candidate plan's samples to it, with every network call counted.

The teacher is RK4 in lambda with ``steps`` steps from ``s_start`` to the path's lowest trained
level, then the exact final denoising step (the same construction as the benchmark's reference,
on noise the benchmark never uses).

    >>> import torch
    >>> from diffsolve.models.gmm import builtin
    >>> t = Teacher(builtin("gmm-2d"), seeds=range(8), shape=(2,), path="edm", steps=20)
    >>> t.calls, t.error("dpm++2m", t.karras(6, "zero")) < 0.5
    (81, True)
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor

from ..denoisers import as_denoiser
from ..noise import NoiseSource
from ..paths import Path, get_path
from ..sample import sample
from ..schedules import DEFAULT_S_RANGE, make_schedule
from ..solvers import get_solver

__all__ = ["Teacher"]


class Teacher:
    """Tuning noise (one per-sample seed each), the teacher's samples from it, and the error of a
    candidate (solver, grid) against them. ``calls`` counts every network call made so far
    (teacher included); ``budget`` (if set) is enforced by :meth:`error`. The last ``holdout``
    samples are kept out of the fitting distance and measured apart (:meth:`errors`)."""

    def __init__(self, denoiser: Any, *, seeds: Sequence[int], shape: Sequence[int], path: Path | str | None = None,
                 cond: dict[str, Any] | None = None, steps: int = 100, dtype: torch.dtype = torch.float64,
                 holdout: int = 0):
        self.den, self.cond, self.dtype = as_denoiser(denoiser), cond, dtype
        p = get_path(path) if path is not None else getattr(self.den, "path", None)
        self.path = p  # None: a model without a path (an exact mixture) on DEFAULT_S_RANGE
        self.seeds = [int(s) for s in seeds]
        if not 0 <= holdout < len(self.seeds):
            raise ValueError(f"holdout must be in 0..{len(self.seeds) - 1} (samples kept out of fitting), got {holdout}")
        self.holdout = int(holdout)
        self.noise = NoiseSource.initial(self.seeds, tuple(shape), dtype=dtype)
        self.s_lo, self.s_start = (float(p.s_min), float(p.s_max)) if p is not None else DEFAULT_S_RANGE
        self.calls = 0
        self.budget: int | None = None
        self._fine: dict[int, tuple] = {}
        res = self._run("rk4", list(make_schedule("log-snr", steps + 1, path=p, s_min=self.s_lo, s_max=self.s_start,
                                                  final="zero")), {})
        self.target = res.samples
        self.teacher = f"rk4 in lambda, {steps} steps + final denoise ({res.nfe} calls)"

    def _run(self, solver: str, grid: Sequence[float], options: dict[str, Any], trajectory: bool = False):
        res = sample(self.den, self.noise, solver=solver, nfe=None, schedule=list(grid), path=self.path,
                     cond=self.cond, dtype=self.dtype, seeds=self.seeds, return_trajectory=trajectory, **options)
        self.calls += res.nfe
        return res

    def fine_trajectory(self, fine: int) -> tuple[list[float], list[Tensor], list[Tensor]]:
        """The teacher trajectory on ``fine + 1`` levels uniform in lambda (RK4, 4 calls a step)
        and ``D(y, s)`` at each of its states (one call each): (levels, states, denoised), computed
        once per ``fine``."""
        if fine not in self._fine:
            F = make_schedule("log-snr", fine, path=self.path, s_min=self.s_lo, s_max=self.s_start,
                              final="s_min").tolist()
            states = self._run("rk4", F, {}, trajectory=True).trajectory
            self._fine[fine] = (F, states, self.denoised(states, F))
        return self._fine[fine]

    def denoised(self, states: Sequence[Tensor], levels: Sequence[float]) -> list[Tensor]:
        """``D(y, s)`` of the tuning batch at each (state, level) pair (one call each, counted)."""
        lv = torch.tensor([float(v) for v in levels], dtype=self.dtype)
        self.den.prepare(torch.cat([lv, lv.new_zeros(1)]), self.dtype)
        cond = self.den.check(states[0], dict(self.cond or {}))
        with torch.no_grad():
            out = [self.den(y, lv[i], **cond) for i, y in enumerate(states)]
        self.calls += len(out)
        return out

    def karras(self, n_steps: int, final: str) -> list[float]:
        """EDM's rho = 7 grid of ``n_steps`` steps on the path's range (a starting point)."""
        return make_schedule("karras", n_steps, s_min=self.s_lo, s_max=self.s_start, final=final).tolist()

    def steps_for(self, solver: str, nfe: int, final: str, options: dict[str, Any] | None = None) -> int:
        """The number of steps ``solver`` takes for ``nfe`` calls with this ending."""
        return get_solver(solver, **(options or {})).for_nfe(nfe, final == "zero").steps_for_nfe(nfe, final == "zero")

    def samples(self, solver: str, grid: Sequence[float], options: dict[str, Any] | None = None) -> Tensor:
        """A candidate's samples from the tuning noise (calls counted; a run that would take the
        calls past the budget is not started)."""
        if self.budget is not None:
            need = get_solver(solver, **(options or {})).nfe_for_steps(len(grid) - 1, float(grid[-1]) == 0.0)
            if self.calls + need > self.budget:
                raise BudgetSpent(self.calls)
        return self._run(solver, grid, dict(options or {})).samples

    def errors(self, solver: str, grid: Sequence[float], options: dict[str, Any] | None = None) -> tuple[float, float]:
        """RMS distance (per coordinate) of a candidate's samples to the teacher's on the fitting
        samples and on the held-out ones (the last ``holdout`` of the batch: tuning chooses
        between grids by them, so that a plan fitted to a few hard samples is not kept); ``inf``
        when the run is not finite or the grid is unusable for the solver."""
        try:
            x = self.samples(solver, grid, options)
        except BudgetSpent:
            raise
        except (ValueError, RuntimeError, FloatingPointError):  # an unusable grid for this solver
            return math.inf, math.inf
        se = (x - self.target).pow(2).flatten(1).mean(1)
        k = se.shape[0] - self.holdout
        fit = float(se[:k].mean().sqrt())
        check = float(se[k:].mean().sqrt()) if self.holdout else fit
        return (fit if math.isfinite(fit) else math.inf), (check if math.isfinite(check) else math.inf)

    def error(self, solver: str, grid: Sequence[float], options: dict[str, Any] | None = None) -> float:
        """RMS distance to the teacher on the fitting samples (:meth:`errors`)."""
        return self.errors(solver, grid, options)[0]


class BudgetSpent(Exception):
    """The tuning budget of network calls is used up."""
