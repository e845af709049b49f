"""Adaptive step-size DPM-Solver-12 and DPM-Solver-23 (Lu et al. 2022, "DPM-Solver: A Fast ODE
Solver for Diffusion Probabilistic Model Sampling in Around 10 Steps", Sec. 3.5 and Algorithm 4).

Each attempted step from lambda to lambda + h computes an embedded pair from shared
evaluations (:mod:`diffsolve.solvers.dpm_solver`):

* DPM-Solver-12: y_low = DPM-Solver-1, y_high = DPM-Solver-2 (r1 = 1/2): 2 evaluations;
* DPM-Solver-23: y_low = DPM-Solver-2 (r1 = 1/3), y_high = DPM-Solver-3: 3 evaluations.

The error estimate (Algorithm 4), elementwise tolerance and RMS over each sample's elements,
the worst sample of the batch deciding (all rows share the step size):

    delta = max(atol, rtol * max(|y_low|, |y_prev|))
    E     = max_b sqrt(mean(((y_high - y_low) / delta)^2))

where y_prev is the y_low of the last accepted step (the start at first).  The step is accepted
if E <= 1 (and y_high kept: local extrapolation); either way the next step size is

    h <- theta * h * E^(-1/k)         (k = 2 or 3, theta = 0.9)

clipped to what is left of the interval.  Options: ``rtol`` (0.05), ``atol`` (0.0078),
``h_init`` (0.05, in lambda), ``theta`` (0.9).

``controller="integral"`` replaces that rule by an integral step-size controller (the I-part
of Soderlind's digital-filter controllers, as k-diffusion's ``dpm_adaptive`` uses): the factor
x = E^(-1/k) is passed through the smooth limiter 1 + atan(x - 1), the step is accepted when
that factor is at least ``accept_safety`` (0.81; i.e. E up to about 1.9 for k = 3) and
h <- h * factor, with no further safety factor.  ``error_norm="batch"`` takes the RMS over the
whole batch instead of the worst sample.  With both, the solver reproduces k-diffusion's
``dpm_adaptive`` closely (gmm-64, gmm-2d: the same NFE at 7 of 10 tolerances, errors within
2%).  Which rule is cheaper at equal error depends on the problem (docs/benchmarks.md), so the
default stays the paper's.

Canonical space.  The paper measures E on x = alpha y; here it is measured on y, which is
the same wherever the relative term of delta dominates and stricter by 1/alpha where atol does
(elements near 0 at high noise).  This keeps the solver free of any model family.

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
    >>> res.nfe == 3 * (res.info["accepted"] + res.info["rejected"]) + 1
    True
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import NFEError, Solver, SolverState, register
from .dpm_solver import dpm_solver_2_update, dpm_solver_3_update
from .euler import ddim_update

__all__ = ["DPMSolver12", "DPMSolver23", "error_ratio"]


ERROR_NORMS = ("sample-max", "batch")
CONTROLLERS = ("paper", "integral")


def error_ratio(y_high: Tensor, y_low: Tensor, y_prev: Tensor, rtol: float, atol: float,
                norm: str = "sample-max") -> Tensor:
    """Algorithm 4's scaled error: the RMS of (y_high - y_low) / delta per sample, the worst
    sample deciding (``norm="sample-max"``), or over the whole batch (``"batch"``)."""
    delta = torch.clamp(rtol * torch.maximum(y_low.abs(), y_prev.abs()), min=atol)
    e = ((y_high - y_low) / delta).reshape(y_high.shape[0], -1)
    return e.pow(2).mean(dim=1).sqrt().max() if norm == "sample-max" else e.pow(2).mean().sqrt()


class _AdaptiveDPMSolver(Solver):
    """Algorithm 4 with the embedded pair of order (k-1, k) given by :meth:`pair`."""

    adaptive = True
    default_schedule = "log-snr"
    #: smallest step (in lambda) before the run is declared stuck
    H_MIN = 1e-10

    def __init__(self, rtol: float = 0.05, atol: float = 0.0078, h_init: float = 0.05, theta: float = 0.9,
                 error_norm: str = "sample-max", controller: str = "paper", accept_safety: float = 0.81):
        for name, v, ok in (("rtol", rtol, rtol >= 0), ("atol", atol, atol > 0), ("h_init", h_init, h_init > 0),
                            ("theta", theta, 0 < theta <= 1), ("accept_safety", accept_safety, 0 < accept_safety <= 1)):
            if not isinstance(v, (int, float)) or not math.isfinite(v) or not ok:
                raise ValueError(f"solver {self.name!r}: bad {name}={v!r}; need rtol >= 0, atol > 0, "
                                 f"h_init > 0, 0 < theta <= 1 and 0 < accept_safety <= 1")
        if error_norm not in ERROR_NORMS:
            raise ValueError(f"unknown error_norm {error_norm!r}; accepted: {', '.join(ERROR_NORMS)}")
        if controller not in CONTROLLERS:
            raise ValueError(f"unknown controller {controller!r}; accepted: {', '.join(CONTROLLERS)}")
        self.rtol, self.atol, self.h_init, self.theta = float(rtol), float(atol), float(h_init), float(theta)
        self.error_norm, self.controller, self.accept_safety = error_norm, controller, float(accept_safety)

    def _control(self, h: float, E: float) -> tuple[bool, float]:
        """(accept?, next step size) from the scaled error E of a step of size h."""
        if self.controller == "paper":  # Algorithm 4: accept E <= 1, h <- theta h E^(-1/k)
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

    # -- Algorithm 4 ----------------------------------------------------------------------
    def pair(self, y: Tensor, s: Tensor, s_next: Tensor, denoise) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def step(self, state: SolverState, denoise) -> SolverState:
        s, s_end, y = state.s, state.s_next, state.y
        info = dict(state.extra.get("info", {"accepted": 0, "rejected": 0, "levels": ()}))
        if s_end == 0:  # the first-order limit y = D(y, s)
            return state.replace(y=ddim_update(y, denoise(y, s), s, s_end), i=state.i + 1)
        y_prev = state.extra.get("y_prev", y)
        h = float(state.extra.get("h", self.h_init))
        lam, lam_end = -math.log(float(s)), -math.log(float(s_end))
        levels = list(info["levels"])
        while lam < lam_end:
            h = min(h, lam_end - lam)  # the step attempted
            last = h == lam_end - lam
            t = s_end if last else torch.exp(torch.tensor(-(lam + h), dtype=torch.float64))
            y_high, y_low = self.pair(y, s, t, denoise)
            E = float(error_ratio(y_high, y_low, y_prev, self.rtol, self.atol, self.error_norm))
            if not math.isfinite(E):
                raise FloatingPointError(f"solver {self.name!r}: non-finite error estimate at s={float(s):.6g}")
            accept, h_next = self._control(h, E)
            if accept:  # keep the higher-order solution
                y, y_prev, s = y_high, y_low, t
                lam = lam_end if last else lam + h
                info["accepted"] += 1
                levels.append(float(t))
            else:
                info["rejected"] += 1
            h = h_next
            if h < self.H_MIN:
                raise RuntimeError(f"solver {self.name!r}: step size underflow (h={h:.3g}) at s={float(s):.6g}; "
                                   f"loosen rtol={self.rtol} / atol={self.atol}")
        info["levels"] = tuple(levels)
        extra = {**state.extra, "y_prev": y_prev, "h": h, "info": info}
        return state.replace(y=y, i=state.i + 1, extra=extra)


@register
class DPMSolver12(_AdaptiveDPMSolver):
    """Adaptive DPM-Solver-12: DPM-Solver-1/-2 embedded pair (2 evaluations per attempt)."""

    name = "dpm-solver-12"
    aliases = ("dpm_solver_12", "dpm-solver-adaptive-2")
    order = 2
    paper = "DPM-Solver (Lu et al. 2022), Sec. 3.5 / Algorithm 4 (adaptive, orders 1-2)"
    nfe_rule = "adaptive (rtol/atol): 2 per attempted step, 1 for a final step to s=0"
    evals_per_step = 2

    def pair(self, y, s, s_next, denoise):
        return dpm_solver_2_update(y, s, s_next, denoise, r1=0.5)


@register
class DPMSolver23(_AdaptiveDPMSolver):
    """Adaptive DPM-Solver-23: DPM-Solver-2 (r1 = 1/3) / DPM-Solver-3 pair (3 evaluations per
    attempt)."""

    name = "dpm-solver-23"
    aliases = ("dpm_solver_23", "dpm-solver-adaptive", "dpm-solver-adaptive-3")
    order = 3
    paper = "DPM-Solver (Lu et al. 2022), Sec. 3.5 / Algorithm 4 (adaptive, orders 2-3)"
    nfe_rule = "adaptive (rtol/atol): 3 per attempted step, 1 for a final step to s=0"
    evals_per_step = 3

    def pair(self, y, s, s_next, denoise):
        return dpm_solver_3_update(y, s, s_next, denoise, r1=1 / 3, r2=2 / 3)
