"""Noise-level grids: 1-D float64 tensors of canonical levels ``s_0 > s_1 > ... > s_N``.

``s_N = 0`` (``final="zero"``, the default: the last step denoises from ``s_{N-1} = s_min`` to
the data) or ``s_N = s_min`` (``final="s_min"``).  A grid for N steps has N + 1 entries; the
network is evaluated at levels ``s_0 .. s_{N-1}`` (and at intermediate levels by single-step
methods), never at 0.  Grids are validated: finite, strictly decreasing, no duplicates.

Builders (``SCHEDULES``), all evaluated exactly (no rounding to integer timesteps unless a
diffusers spacing convention asks for it):

* ``karras``: EDM eq. (5), ``s_i = (s_max^(1/rho) + i/(N-1) (s_min^(1/rho) - s_max^(1/rho)))^rho``;
* ``log-snr``: uniform in lambda = -log s (DPM-Solver's "logSNR" spacing);
* ``time``: uniform in the path's own time from t_max to t_min (both ends evaluated);
* ``time-linspace`` / ``time-leading`` / ``time-trailing``: diffusers' integer timestep
  conventions for tables (``timestep_spacing``), reproduced exactly for comparisons: the
  timesteps of ``DPMSolverMultistepScheduler`` / ``UniPCMultistepScheduler`` /
  ``DEISMultistepScheduler`` (``steps_offset=0``), followed by 0.  (``DDIMScheduler`` and the
  other single-step schedulers share "trailing" but not "linspace"/"leading": theirs evaluate
  n timesteps ending at t = 0; pass ``path.s(scheduler.timesteps)`` and 0 as an explicit list.)
  They are defined by the table, so ``s_min``/``s_max`` are refused;
* ``time-quadratic``: t_i = t_min + (t_max - t_min) u_i^2 on a uniform u grid (DDIM's "quad");
* ``flow-shift``: the SD3 shift, t' = k t / (1 + (k - 1) t) on a uniform flow-time grid, which
  in canonical space is simply s' = k s;
* an explicit list or tensor of levels.

Example::

    >>> from diffsolve.schedules import make_schedule
    >>> [round(v, 4) for v in make_schedule("karras", 4, s_min=0.002, s_max=80.0).tolist()]
    [80.0, 9.7232, 0.47, 0.002, 0.0]
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .checks import check_int, check_number
from .paths import Path, get_path

__all__ = ["make_schedule", "validate_schedule", "SCHEDULES", "FINALS", "DEFAULT_S_RANGE",
           "karras", "log_snr", "flow_shift"]

FINALS = ("zero", "s_min")
#: the largest canonical level a grid may hold (s^2 must stay finite in float64)
MAX_LEVEL = 1e100
#: the most steps a grid may have (more than any sampler needs; a larger count is a typo)
MAX_STEPS = 100_000
#: noise range used when neither a path nor explicit limits are given (EDM's)
DEFAULT_S_RANGE = (0.002, 80.0)
F64 = torch.float64


def validate_schedule(levels: Tensor | Sequence[float], *, allow_zero_end: bool = True) -> Tensor:
    """Check a grid of canonical noise levels and return it as a float64 tensor."""
    if isinstance(levels, Tensor) and (levels.is_complex() or levels.dtype == torch.bool):
        raise TypeError(f"schedule levels must be real numbers, got a tensor of dtype {levels.dtype}")
    if isinstance(levels, (list, tuple)) and any(isinstance(v, (bool, str, bytes, complex)) for v in levels):
        raise TypeError(f"schedule levels must be real numbers, got {list(levels)!r}")
    try:
        s = torch.as_tensor(levels, dtype=F64).clone()
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"schedule must be a name or a 1-D list of noise levels (numbers), got {levels!r}") from None
    if s.ndim != 1 or s.numel() < 2:
        raise ValueError(f"a schedule needs at least 2 noise levels in a 1-D sequence, got shape {tuple(s.shape)}")
    if not bool(torch.isfinite(s).all()):
        raise ValueError(f"schedule contains non-finite levels: {s.tolist()}")
    if bool((s > MAX_LEVEL).any()):
        raise ValueError(f"schedule levels above {MAX_LEVEL:g} (s_max={float(s.max()):g}) overflow s^2 in float64; "
                         f"no path needs them")
    diffs = s[1:] - s[:-1]
    if bool((diffs == 0).any()):
        dup = s[1:][diffs == 0].tolist()
        raise ValueError(f"schedule has duplicated noise levels {dup}; levels must be strictly decreasing")
    if not bool((diffs < 0).all()):
        raise ValueError(f"schedule must be strictly decreasing, got {s.tolist()}")
    last_ok = s[-1] >= 0 if allow_zero_end else s[-1] > 0
    if not bool(last_ok) or not bool((s[:-1] > 0).all()):
        raise ValueError(f"schedule levels must be positive (only the last may be 0), got {s.tolist()}")
    return s


def karras(n: int, s_min: float, s_max: float, rho: float = 7.0) -> Tensor:
    """EDM eq. (5): n levels from s_max to s_min, uniform in s^(1/rho)."""
    if rho <= 0:
        raise ValueError(f"rho must be positive, got {rho}")
    u = torch.linspace(0, 1, n, dtype=F64)
    la, lb = math.log(s_max) / rho, math.log(s_min) / rho  # log of s^(1/rho) at the ends
    if max(abs(la), abs(lb)) < 700:
        a, b = s_max ** (1 / rho), s_min ** (1 / rho)
        out = (a + u * (b - a)) ** rho
    else:  # small rho: s^(1/rho) overflows; the same formula with the larger end factored out
        m = max(la, lb)
        out = torch.exp(rho * (m + torch.log((1 - u) * math.exp(la - m) + u * math.exp(lb - m))))
    out[0], out[-1] = s_max, s_min
    return out


def log_snr(n: int, s_min: float, s_max: float) -> Tensor:
    """n levels uniform in lambda = -log s."""
    out = torch.exp(torch.linspace(math.log(s_max), math.log(s_min), n, dtype=F64))
    out[0], out[-1] = s_max, s_min  # exact end points (exp(log(x)) may differ in the last bit)
    return out


def flow_shift(n: int, s_min: float, s_max: float, shift: float = 3.0) -> Tensor:
    """SD3's shift: uniform flow time u = s/(1+s) between the unshifted ends, then s' = shift s."""
    if shift <= 0:
        raise ValueError(f"shift must be positive, got {shift}")
    lo, hi = s_min / shift, s_max / shift
    u = torch.linspace(hi / (1 + hi), lo / (1 + lo), n, dtype=F64)
    return shift * u / (1 - u)


def _time_grid(n: int, path: Path, spacing: str, power: float = 2.0) -> Tensor:
    tmin, tmax = path.t_min, path.t_max
    if spacing == "uniform":
        t = torch.linspace(tmax, tmin, n, dtype=F64)
    elif spacing == "quadratic":
        u = torch.linspace(1, 0, n, dtype=F64)
        t = tmin + (tmax - tmin) * u**power
    else:
        T = getattr(path, "num_steps", None)
        if T is None:
            raise ValueError(f"spacing {spacing!r} needs a discrete (DDPM table) path, got {path.name!r}")
        # diffusers' multistep schedulers (DPMSolverMultistep, UniPCMultistep, DEISMultistep):
        # n timesteps from an (n+1)-point grid whose last point (0) is replaced by the final
        # sigma.  Computed with numpy as diffusers does: torch.linspace/arange round differently
        # in the last bit, which flips .5 roundings (e.g. linspace for n = 26, trailing for n = 48).
        if spacing == "linspace":
            tn = np.linspace(0, T - 1, n + 1).round()[::-1][:-1]
        elif spacing == "leading":
            tn = (np.arange(0, n + 1) * (T // (n + 1))).round()[::-1][:-1]
        elif spacing == "trailing":
            # diffusers' float arange yields an (n+1)-th timestep -1 for some n (61, 103, ...);
            # that spurious extra step is dropped here
            tn = (np.arange(T, 0, -T / n).round() - 1)[:n]
        else:  # pragma: no cover - guarded by make_schedule
            raise AssertionError(spacing)
        t = torch.from_numpy(tn.astype(np.float64).copy()).clamp(tmin, tmax)
    return path.s(t)


SCHEDULES: dict[str, str] = {
    "karras": "EDM's rho-spacing (rho=7)",
    "log-snr": "uniform in lambda = log-SNR / 2",
    "time": "uniform in the path's time, both ends evaluated",
    "time-linspace": "diffusers timestep_spacing='linspace' (tables)",
    "time-leading": "diffusers timestep_spacing='leading' (tables)",
    "time-trailing": "diffusers timestep_spacing='trailing' (tables)",
    "time-quadratic": "quadratic in the path's time (DDIM 'quad')",
    "flow-shift": "SD3 flow shift (s' = shift * s on a uniform flow-time grid)",
}


def make_schedule(kind: str | Tensor | Sequence[float], n_steps: int, *, path: Path | str | None = None,
                  s_min: float | None = None, s_max: float | None = None, final: str = "zero",
                  rho: float | None = None, shift: float | None = None) -> Tensor:
    """Build a validated grid for ``n_steps`` steps (``n_steps + 1`` levels).

    The range defaults to the path's trained range ``[path.s_min, path.s_max]``, else to
    ``DEFAULT_S_RANGE``.  With ``final="zero"`` the last step goes from ``s_min`` to 0; with
    ``final="s_min"`` the grid stops at ``s_min``.  An explicit list is validated and returned
    unchanged (``n_steps`` must then match its length - 1, or be None).
    """
    if not isinstance(kind, str):
        s = validate_schedule(kind)
        if n_steps is not None and s.numel() - 1 != n_steps:
            raise ValueError(f"explicit schedule has {s.numel() - 1} steps but {n_steps} were requested")
        return s
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r}; accepted: {', '.join(SCHEDULES)} or an explicit list of levels")
    if final not in FINALS:
        raise ValueError(f"unknown final {final!r}; accepted: {', '.join(FINALS)}")
    n_steps = check_int("make_schedule", "n_steps", n_steps, minimum=1, maximum=MAX_STEPS)
    for name, value, owner in (("rho", rho, "karras"), ("shift", shift, "flow-shift")):
        if value is not None and kind != owner:
            raise ValueError(f"{name}={value!r} shapes only schedule={owner!r}; schedule {kind!r} does not use it "
                             f"(it would be ignored)")
    rho = 7.0 if rho is None else check_number("make_schedule", "rho", rho, 0, low_open=True)
    shift = 3.0 if shift is None else check_number("make_schedule", "shift", shift, 0, low_open=True)
    if s_min is not None:
        s_min = check_number("make_schedule", "s_min", s_min, 0, low_open=True)
    if s_max is not None:
        s_max = check_number("make_schedule", "s_max", s_max, 0, low_open=True)
    p = get_path(path) if path is not None else None
    if p is not None:
        lo, hi = p.s_min, p.s_max
    else:
        lo, hi = DEFAULT_S_RANGE
    lo = lo if s_min is None else float(s_min)
    hi = hi if s_max is None else float(s_max)
    if not (0 < lo < hi and math.isfinite(hi)):
        raise ValueError(f"need 0 < s_min < s_max < inf, got s_min={lo}, s_max={hi}")
    n_eval = n_steps if final == "zero" else n_steps + 1
    if n_eval == 1 and kind not in ("time-linspace", "time-leading", "time-trailing"):
        levels = torch.tensor([hi], dtype=F64)  # a single step starts at s_max
    elif kind == "karras":
        levels = karras(n_eval, lo, hi, rho)
    elif kind == "log-snr":
        levels = log_snr(n_eval, lo, hi)
    elif kind == "flow-shift":
        levels = flow_shift(n_eval, lo, hi, shift)
    else:
        if p is None:
            raise ValueError(f"schedule {kind!r} is defined through a path's time; pass path=...")
        spacing = {"time": "uniform", "time-quadratic": "quadratic"}.get(kind, kind.removeprefix("time-"))
        if (s_min is not None or s_max is not None) and spacing not in ("uniform", "quadratic"):
            raise ValueError(f"schedule {kind!r} follows diffusers' timesteps of the table and takes no "
                             f"s_min/s_max (got s_min={s_min}, s_max={s_max}); use 'time' for limits")
        if (s_min is not None or s_max is not None) and spacing in ("uniform", "quadratic"):
            # honour explicit limits by mapping them to the path's times
            tp = _SubPath(p, float(p.t_of_s(torch.tensor(lo, dtype=F64))), float(p.t_of_s(torch.tensor(hi, dtype=F64))))
            levels = _time_grid(n_eval, tp, spacing)
        elif spacing in ("linspace", "leading", "trailing"):
            # diffusers' n timesteps; then 0 (final_sigmas_type="zero") or the table's smallest
            # level s(t_min) (final_sigmas_type="sigma_min": the run returns the state there)
            levels = _time_grid(n_steps, p, spacing)
            if final == "s_min":
                levels = torch.cat([levels, torch.tensor([p.s_min], dtype=F64)])
        else:
            levels = _time_grid(n_eval, p, spacing)
    if final == "zero":
        levels = torch.cat([levels, torch.zeros(1, dtype=F64)])
    try:
        return validate_schedule(levels)
    except ValueError as e:  # name the arguments that made the grid, not only the grid
        raise ValueError(f"schedule {kind!r} with n_steps={n_steps}, s_min={lo:g}, s_max={hi:g}"
                         + (f", rho={rho:g}" if kind == "karras" else f", shift={shift:g}" if kind == "flow-shift" else "")
                         + f" gives no usable grid ({e}); use fewer steps or other limits"
                         + (" or a rho near 7" if kind == "karras" else "")) from None


class _SubPath(Path):
    """A view of a path restricted to [t_min, t_max]."""

    def __init__(self, base: Path, t_min: float, t_max: float):
        self.base, self.t_min, self.t_max, self.name = base, t_min, t_max, base.name

    def alpha(self, t):
        return self.base.alpha(t)

    def sigma(self, t):
        return self.base.sigma(t)

    def s(self, t):
        return self.base.s(t)

    def lam(self, t):
        return self.base.lam(t)

    def t_of_lam(self, lam):
        return self.base.t_of_lam(lam)


