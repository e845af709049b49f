"""Grid warnings: does a solver on a given grid amplify its error beyond the data's scale?

The linear test problem.  For Gaussian data of variance v the denoiser is linear,

    D(y, s) = v / (v + s^2) y,

and the probability-flow ODE dy/ds = (y - D)/s has the exact solution
y(s) = y(s_0) sqrt(v + s^2) / sqrt(v + s_0^2).  A solver run on it from y(s_0) = sqrt(v + s_0^2)
(one standard deviation of the noisy marginal) should end near sqrt(v); its error in units of
the data's standard deviation,

    A(grid, v) = |y_N - sqrt(v + s_N^2)| / sqrt(v),

is the amplification of its corrections on that grid: the Dahlquist test of ODE stability
theory, with the denoiser of Gaussian data in place of lambda y.  Explicit high-order steps over
a long step in log s (s_i / s_{i+1} of hundreds or more: the first step of a 2-step Karras or
log-SNR grid, or the last steps of a grid uniform in time) extrapolate D far outside the
step's level and A grows with the step ratio.  A stable first-order step (DDIM) keeps A below 1
on every grid (it lands on D, a shrunk copy of y).

Threshold.  The warning fires when A > 1 for unit-variance data (v = 1, the scale a diffusion
path's levels are defined for) or for v = 0.01 (data of a tenth of that spread, as the
components of a mixture): the solver's error on the simplest data then exceeds the data's own
spread.  Calibration on the exact mixtures (gmm-2d and gmm-64 x the 10 paths x karras / log-snr
/ time grids x the 14 deterministic fixed-budget solvers x nfe 2..21: 12,660 runs of 32
samples, scripts/stability_scan.py): of the 1,183 runs whose samples came out more than
3x the data's RMS, 1,181 are flagged (the two missed: dpm-solver-fast at nfe 8-9 on log-snr
grids, 3.0-3.4x); of the 1,984 runs above 1.5x, 1,665 (the rest are nonlinear failures of
multistep methods that the linear problem does not see).  Flagged runs that stayed below 1.5x:
429 of 10,676, mostly on ``time`` grids whose last step has a ratio of 10^2-10^3.  dpm++2m and
unipc on karras grids at nfe 8, 10 and 20 (the README's runs) are not flagged on any path.
Methods in data-prediction form (DDIM, dpm++2s, dpm++2m, DEIS, iPNDM, RF-Solver-2) were never
above 1.9x; the noise-prediction and derivative forms (Heun, RK4, DPM-Solver-2/3/fast) were the
ones that reach 10^2-10^7x at small NFE.

The check is one solve of a (2 x 1) batch (both variances) with no network call: about 0.1 ms
per step, once per solver configuration and grid (cached).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..noise import NoiseSource

__all__ = ["linear_test_amplification", "stochastic_test_amplification", "linear_test_warning", "TEST_VARIANCES",
           "THRESHOLD", "STOCHASTIC_ROWS"]

#: data variances of the linear test problem
TEST_VARIANCES = (1.0, 0.01)
#: warn when the linear-test error exceeds this many standard deviations of the data
THRESHOLD = 1.0


def linear_test_amplification(solver: Any, grid: tuple[float, ...],
                              variances: tuple[float, ...] = TEST_VARIANCES) -> list[tuple[float, int]]:
    """For each data variance v: ``(A, i)``, the solver's final error on the linear test problem
    in data standard deviations, and the step i whose local error (from the state it starts at)
    is the largest.  All variances run as the rows of one batch."""
    sigmas = torch.tensor(grid, dtype=torch.float64)
    v = torch.tensor(variances, dtype=torch.float64).reshape(-1, 1)
    y = torch.sqrt(v + grid[0] * grid[0])  # products, not **: an overflow is inf, not an exception

    def denoise(yy, s):
        s = float(s) if not isinstance(s, torch.Tensor) or s.ndim == 0 else float(s.reshape(-1)[0])
        return yy * (v / (v + s * s))

    state = solver.init(y, sigmas, None)
    worst = [(-1.0, 0)] * len(variances)
    for i in range(len(grid) - 1):
        y_i = state.y
        state = solver.step(state, denoise)
        exact = y_i * torch.sqrt((v + grid[i + 1] * grid[i + 1]) / (v + grid[i] * grid[i]))
        local = (state.y - exact).abs().reshape(-1).tolist()
        worst = [(e, i) if not e <= w[0] else w for e, w in zip(local, worst)]  # NaN counts as worst
    final = ((state.y - torch.sqrt(v + grid[-1] * grid[-1])).abs() / torch.sqrt(v)).reshape(-1).tolist()
    return [(a if math.isfinite(a) else math.inf, w[1]) for a, w in zip(final, worst)]


#: rows per variance of the stochastic test (the spread is estimated to ~3%)
STOCHASTIC_ROWS = 512


def stochastic_test_amplification(solver: Any, grid: tuple[float, ...],
                                  variances: tuple[float, ...] = TEST_VARIANCES) -> list[tuple[float, int]]:
    """The linear test for a stochastic solver: each variance v runs :data:`STOCHASTIC_ROWS`
    samples from the exact noisy marginal N(0, v + s_0^2) with the solver's own noise, and A is
    the error of the final samples' spread, |std(y_N) / sqrt(v + s_N^2) - 1| (the mean-free
    analogue of the deterministic test: the law of every level is known exactly).  The step
    reported is the one that added the most to that error."""
    k, n = len(variances), STOCHASTIC_ROWS
    sigmas = torch.tensor(grid, dtype=torch.float64)
    vv = torch.tensor(variances, dtype=torch.float64)
    v = vv.repeat_interleave(n).reshape(-1, 1)
    src = NoiseSource(range(k * n))
    y = torch.sqrt(v + grid[0] * grid[0]) * src.normal(-1, torch.empty(k * n, 1, dtype=torch.float64))

    def denoise(yy, s):
        s = float(s) if not isinstance(s, torch.Tensor) or s.ndim == 0 else float(s.reshape(-1)[0])
        return yy * (v / (v + s * s))

    def spread_error(state, level: float) -> list[float]:
        std = state.y.reshape(k, n).std(dim=1)
        return (std / torch.sqrt(vv + level * level) - 1).abs().tolist()

    state = solver.init(y, sigmas, src)
    errors, worst = spread_error(state, grid[0]), [(-math.inf, 0)] * k
    for i in range(len(grid) - 1):
        state = solver.step(state, denoise)
        now = spread_error(state, grid[i + 1])
        worst = [(e - p, i) if not e - p <= w[0] else w for e, p, w in zip(now, errors, worst)]
        errors = now
    return [(a if math.isfinite(a) else math.inf, w[1]) for a, w in zip(errors, worst)]


def _key(solver: Any, grid: tuple[float, ...]):
    """A cache key: the solver's class, its (hashable) configuration and the grid; None if the
    configuration is not hashable."""
    try:
        config = tuple(sorted(vars(solver).items()))
        hash(config)
    except TypeError:
        return None
    return type(solver), config, grid


_CACHE: dict = {}


def linear_test_warning(solver: Any, grid: tuple[float, ...]) -> str | None:
    """The one-line warning of :meth:`Solver.grid_warning`, or None (module docstring).  Results
    are cached per solver configuration and grid (the driver asks once per run)."""
    if len(grid) < 2:
        return None
    key = _key(solver, grid)
    if key is not None and key in _CACHE:
        return _CACHE[key]
    test = stochastic_test_amplification if solver.stochastic else linear_test_amplification
    found = [(a, i, v) for (a, i), v in zip(test(solver, grid), TEST_VARIANCES)]
    amp, i, v = max(found, key=lambda t: t[0])
    msg = None
    if amp > THRESHOLD:
        s, s_next = grid[i], grid[i + 1]
        ratio = f"ratio {s / s_next:.3g}" if s_next > 0 else "to 0"
        what = ("the spread of its samples is off by" if solver.stochastic else "the result is off by")
        msg = (f"{solver.name}: the step {s:.4g} -> {s_next:.4g} ({ratio}) of this {len(grid) - 1}-step grid "
               f"amplifies its correction: on Gaussian data (variance {v:g}) {what} {amp:.3g}x "
               f"the data's scale; {solver.stability_advice}")
    if key is not None:
        if len(_CACHE) >= 512:
            _CACHE.clear()
        _CACHE[key] = msg
    return msg
