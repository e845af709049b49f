"""Adaptive step-size DPM-Solver-12 and DPM-Solver-23 (Lu et al. 2022, "DPM-Solver: A Fast ODE
Solver for Diffusion Probabilistic Model Sampling in Around 10 Steps", Sec. 3.5 and Algorithm 4).

Each attempted step from lambda to lambda + h computes an embedded pair from shared
evaluations (:mod:`diffsolve.solvers.dpm_solver`):

* DPM-Solver-12: y_low = DPM-Solver-1, y_high = DPM-Solver-2 (r1 = 1/2): 2 evaluations;
* DPM-Solver-23: y_low = DPM-Solver-2 (r1 = 1/3), y_high = DPM-Solver-3: 3 evaluations.

The first, D(y, s) at the step's start, is shared by every attempt from the same point: a rejected
attempt costs one evaluation fewer.  (k-diffusion's dpm_adaptive, 0.1.1.post1, does not: it clears
its cache at every attempt, so a rejection costs it all 3; counted on gmm-64 at rtol 0.01, 57
calls for 16 accepted and 3 rejected steps.)

The error estimate [DPM-Solver Alg. 4], elementwise tolerance and RMS over each sample's
elements, the worst sample of the batch deciding (all rows share the step size):

    delta = max(atol, rtol * max(|y_low|, |y_prev| sqrt(1 + t^2) / sqrt(1 + s^2)))
    E     = max_b sqrt(mean(((y_high - y_low) / delta)^2))

for a step from level s to t, where y_prev is the y_low of the last accepted step (the start at
first), which lives at level s.  The step is accepted if E <= 1 (and y_high kept: local
extrapolation); either way the next step size is

    h <- theta * h * E^(-1/k)         (k = 2 or 3, theta = 0.9)

clipped to what is left of the interval.  Options: ``rtol`` (0.05), ``atol`` (0.0078),
``h_init`` (0.05, in lambda), ``theta`` (0.9).

The scale of the tolerance (why delta differs from the paper's).  Algorithm 4 measures the
error on the model's state x_t, and x_prev is the previous x.  On a VP model x = y / sqrt(1 +
s^2), of the data's size at every level, so there ``rtol * max(|x_low|, |x_prev|)`` is a
tolerance of data-scale quantities.  Written in canonical y at the step's target level t it is
``rtol * max(|y_low|, |y_prev| sqrt(1 + t^2) / sqrt(1 + s^2))``: the relative part above.  It
is path-free (the VP state with the same SNR exists for every path), and it is what the old
rule ``rtol * max(|y_low|, |y_prev|)`` lacked: y grows like s, so y_prev from a level s >> t
made delta ~ rtol * s, and on ``ddpm-cosine`` (s_max ~ 2e4) dpm-solver-12 at rtol 0.01 accepted
two steps and landed 112x the data's RMS away from the solution (gmm-2d).  The absolute part ``atol`` stays on y:
stricter than the paper's by sqrt(1 + t^2) at high noise, where an early error can send a
mixture sample to another mode.  (With atol also on the VP state the error at tight rtol
stopped shrinking in proportion to rtol: dpm-solver-12 on gmm-64, error / (rtol RMS) 0.017 at
rtol 1e-2 but 0.11 at 1e-4, against 0.011-0.013 with this rule.)  Measured on the exact
mixtures gmm-2d and gmm-64, at rtol = 0.01 the final error is at most 0.0073 of the data's RMS
on every path (default controller; the paper rule 0.0051; tests/test_singlestep.py checks < 0.05).

``controller="integral"`` replaces the paper's rule by an integral step-size controller (the I-part
of Soderlind's digital-filter controllers, as k-diffusion's ``dpm_adaptive`` uses): the factor
x = E^(-1/k) is passed through the smooth limiter 1 + atan(x - 1), the step is accepted when
that factor is at least ``accept_safety`` (0.81; i.e. E up to about 1.9 for k = 3) and
h <- h * factor, with no further safety factor.  ``error_norm="batch"`` takes the RMS over the
whole batch instead of the worst sample.

The default is ``controller="integral", error_norm="batch"``; ``controller="paper",
error_norm="sample-max"`` is Algorithm 4 as printed.  At equal NFE (the mixture benchmarks,
docs/benchmarks.md, log-log interpolation between tolerances) DPM-Solver-23's error with the
default is 0.32-0.52x the paper rule's on gmm-2d, 0.52-0.72x on gmm-64 and 0.38-0.51x on gmm-3072
from 44 NFE (1.21x at 38), and 0.19-0.89x that of k-diffusion's ``dpm_adaptive`` (digits, a trained
network: 0.67-1.05x; DPM-Solver-12 is behind it, see there); at rtol = 0.01 it takes 0.23-0.86x the
paper rule's NFE (median 0.61; gmm-2d / gmm-64, both solvers, every path: 37-59 NFE against 44-222)
with a worst final error of 0.0073 of the data's RMS (paper rule: 0.0051).

How it runs in the driver.  The NFE is not known in advance: the class sets ``adaptive =
True`` (the driver skips its NFE-rule check and reports the calls it counted in
``SampleResult.nfe``) and refuses an integer ``nfe``.  Each driver step integrates one
interval of the grid adaptively (looping internally until it lands exactly on the next
level); with a schedule name the grid is ``[s_max, s_min]`` or ``[s_max, s_min, 0]``, and a
step to s = 0 is the usual first-order limit y = D(y, s) (one evaluation).  Longer explicit
grids work too: their levels become checkpoints at which hooks run.  The step size proposed at
the end of an interval carries over to the next (``state.extra["h"]``).  The accepted and
rejected step counts and the accepted levels are in ``SampleResult.info``.

Example::

    >>> import torch, diffsolve
    >>> g = diffsolve.exact_model("gmm-2d")
    >>> noise = torch.randn(8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> res = diffsolve.sample(g, noise, solver="dpm-solver-23", nfe=None, schedule="log-snr", rtol=0.05)
    >>> res.nfe == 3 * res.info["accepted"] + 2 * res.info["rejected"] + 1  # D(y, s) reused after a rejection
    True
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import NFEError, Solver, SolverState, register
from .dpm_solver import dpm_solver_2_update, dpm_solver_3_update
from .euler import ddim_update
from .kit import check_choice, check_number, level_at, step_size

__all__ = ["DPMSolver12", "DPMSolver23", "error_ratio", "vp_scale"]


ERROR_NORMS = ("sample-max", "batch")
CONTROLLERS = ("paper", "integral")


def vp_scale(s: float) -> float:
    """1 / sqrt(1 + s^2): canonical y at level s times this is the variance-preserving state
    with the same SNR (the paper's x_t on VP models), of the data's size at every level."""
    return 1.0 / math.sqrt(1.0 + s * s)


def error_ratio(x_high: Tensor, x_low: Tensor, x_prev: Tensor, rtol: float, atol: float,
                norm: str = "sample-max") -> Tensor:
    """[DPM-Solver Alg. 4]'s scaled error: the RMS of (x_high - x_low) / delta per sample, the
    worst sample deciding (``norm="sample-max"``), or over the whole batch (``"batch"``)."""
    delta = torch.clamp(rtol * torch.maximum(x_low.abs(), x_prev.abs()), min=atol)
    e = ((x_high - x_low) / delta).reshape(x_high.shape[0], -1)
    return e.pow(2).mean(dim=1).sqrt().max() if norm == "sample-max" else e.pow(2).mean().sqrt()


class _AdaptiveDPMSolver(Solver):
    """[DPM-Solver Alg. 4] with the embedded pair of order (k-1, k) given by :meth:`pair`."""

    adaptive = True
    default_schedule = "log-snr"

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        cls.nfe_rule = (f"adaptive (rtol/atol): {cls.evals_per_step} per accepted step, {cls.evals_per_step - 1} per "
                        f"rejected one (D(y, s) is reused), 1 for a final step to s=0")
    #: smallest step (in lambda) before the run is declared stuck
    H_MIN = 1e-10

    def __init__(self, rtol: float = 0.05, atol: float = 0.0078, h_init: float = 0.05, theta: float = 0.9,
                 error_norm: str = "batch", controller: str = "integral", accept_safety: float = 0.81):
        who = self.owner
        self.rtol = check_number(who, "rtol", rtol, 0)
        self.atol = check_number(who, "atol", atol, 0, low_open=True)
        self.h_init = check_number(who, "h_init", h_init, self.H_MIN)
        self.theta = check_number(who, "theta", theta, 0, 1, low_open=True)
        self.accept_safety = check_number(who, "accept_safety", accept_safety, 0, 1, low_open=True)
        self.error_norm = check_choice(who, "error_norm", error_norm, ERROR_NORMS)
        self.controller = check_choice(who, "controller", controller, CONTROLLERS)

    def _control(self, h: float, E: float) -> tuple[bool, float]:
        """(accept?, next step size) from the scaled error E of a step of size h."""
        if self.controller == "paper":  # [DPM-Solver Alg. 4]: accept E <= 1, h <- theta h E^(-1/k)
            return E <= 1, (self.theta * h * E ** (-1.0 / self.order) if E > 0 else math.inf)
        # integral controller (Soderlind's digital filters, I-part only), with a smooth limiter
        # 1 + atan(x - 1) on the factor x = E^(-1/k); accept when the factor stays above
        # accept_safety, i.e. E <= (1 + tan(accept_safety - 1))^(-k)
        x = E ** (-1.0 / self.order) if E > 0 else math.inf
        factor = 1 + math.atan(x - 1)  # atan(inf) = pi/2: E = 0 grows h by at most 2.57x
        return factor >= self.accept_safety, h * factor

    # -- NFE: decided by the tolerances, counted by the driver ---------------------------
    def _refuse(self, nfe) -> NFEError:
        return NFEError(
            f"solver {self.name!r} is adaptive: its number of evaluations follows from rtol/atol "
            f"(rtol={self.rtol}, atol={self.atol}), not from nfe={nfe!r}; pass nfe=None with a schedule "
            f"name or an explicit [s_max, s_min(, 0)] list, and read the NFE used from SampleResult.nfe")

    def for_nfe(self, nfe: int, final_zero: bool = True) -> Solver:
        raise self._refuse(nfe)

    def steps_for_nfe(self, nfe: int | None, final_zero: bool = True) -> int:
        """``nfe`` must be None: one adaptive interval [s_max, s_min], plus the step to 0."""
        if nfe is not None:
            raise self._refuse(nfe)
        return 2 if final_zero else 1

    def nfe_for_steps(self, n_steps: int, final_zero: bool = True) -> int:
        raise NFEError(f"solver {self.name!r} is adaptive: its NFE is known only after the run "
                       f"(SampleResult.nfe)")

    # -- [DPM-Solver Alg. 4] ----------------------------------------------------------------
    def pair(self, y: Tensor, s: float, s_next: float, d0: Tensor, denoise) -> tuple[Tensor, Tensor]:  # pragma: no cover
        """(higher-order, embedded lower-order) solutions at s_next from y at s, d0 = D(y, s)."""
        raise NotImplementedError

    def step(self, state: SolverState, denoise) -> SolverState:
        s, s_end, y = state.s, state.s_next, state.y
        info = dict(state.extra.get("info", {"accepted": 0, "rejected": 0, "levels": ()}))
        if s_end == 0:  # the first-order limit y = D(y, s)
            d0 = denoise(y, s)
            return state.replace(y=ddim_update(y, d0, s, s_end), i=state.i + 1, x0=d0)
        y_prev = state.extra.get("y_prev", y)  # y_low of the last accepted step, at level s
        h = float(state.extra.get("h", self.h_init))
        left = step_size(s, s_end)  # what is left of the interval, in lambda
        levels, x0 = list(info["levels"]), state.x0
        d0 = None  # D(y, s): evaluated once per accepted point, reused by the attempts that follow a rejection
        while left > 0:
            h = min(h, left)  # the step attempted
            last = h == left
            t = s_end if last else level_at(s, h, 1.0)
            if d0 is None:
                d0 = denoise(y, s)
            y_high, y_low = self.pair(y, s, t, d0, denoise)
            # [DPM-Solver Alg. 4] with the relative tolerance on the variance-preserving state (module docstring):
            # y_prev is carried to the target level's scale, x_prev * sqrt(1 + t^2)
            E = float(error_ratio(y_high, y_low, y_prev * (vp_scale(s) / vp_scale(t)), self.rtol, self.atol,
                                  self.error_norm))
            if not math.isfinite(E):
                raise FloatingPointError(f"solver {self.name!r}: non-finite error estimate at s={s:.6g}")
            accept, h_next = self._control(h, E)
            if accept:  # keep the higher-order solution (local extrapolation)
                y, y_prev, s, x0, d0 = y_high, y_low, t, d0, None
                left = 0.0 if last else step_size(s, s_end)
                info["accepted"] += 1
                levels.append(t)
            else:
                info["rejected"] += 1
            h = h_next
            if h < self.H_MIN:
                raise FloatingPointError(f"solver {self.name!r}: step size underflow (h={h:.3g}) at s={s:.6g}; "
                                   f"loosen rtol={self.rtol} / atol={self.atol}")
        info["levels"] = tuple(levels)
        extra = {**state.extra, "y_prev": y_prev, "h": h, "info": info}
        return state.replace(y=y, i=state.i + 1, extra=extra, x0=x0)


@register
class DPMSolver12(_AdaptiveDPMSolver):
    """Adaptive DPM-Solver-12: DPM-Solver-1/-2 embedded pair (2 evaluations per accepted attempt,
    1 per rejected one)."""

    name = "dpm-solver-12"
    aliases = ("dpm_solver_12", "dpm-solver-adaptive-2")
    order = 2
    paper = "DPM-Solver (Lu et al. 2022), Sec. 3.5 / Algorithm 4 (adaptive, orders 1-2)"
    evals_per_step = 2

    def pair(self, y, s, s_next, d0, denoise):
        return dpm_solver_2_update(y, s, s_next, d0, denoise, r1=0.5)


@register
class DPMSolver23(_AdaptiveDPMSolver):
    """Adaptive DPM-Solver-23: DPM-Solver-2 (r1 = 1/3) / DPM-Solver-3 pair (3 evaluations per accepted
    attempt, 2 per rejected one)."""

    name = "dpm-solver-23"
    aliases = ("dpm_solver_23", "dpm-solver-adaptive", "dpm-solver-adaptive-3")
    order = 3
    paper = "DPM-Solver (Lu et al. 2022), Sec. 3.5 / Algorithm 4 (adaptive, orders 2-3)"
    evals_per_step = 3

    def pair(self, y, s, s_next, d0, denoise):
        return dpm_solver_3_update(y, s, s_next, d0, denoise, r1=1 / 3, r2=2 / 3)
