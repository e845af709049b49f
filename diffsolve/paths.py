"""Gaussian paths ``x_t = alpha(t) x0 + sigma(t) eps`` and their canonical (VE) view.

Every path is mapped to the canonical variables of DESIGN.md::

    y = x / alpha,   s = sigma / alpha = exp(-lambda),   lambda = log(alpha / sigma)

A :class:`Path` knows ``alpha(t)``, ``sigma(t)``, their time derivatives, the half log-SNR
``lam(t)`` and its inverse ``t_of_lam``; ``s(t)`` and ``t_of_s`` follow.  ``t`` is always in
the path's *own* units, the ones its network was trained with: the timestep index 0..999 (as a
float) for DDPM tables, ``t`` in [0, 1] for continuous VP / flow paths, ``sigma`` for EDM and VE.

Example::

    >>> import torch
    >>> from diffsolve.paths import get_path
    >>> p = get_path("ddpm-linear")
    >>> t = torch.tensor([0.0, 499.5, 999.0], dtype=torch.float64)
    >>> torch.allclose(p.t_of_lam(p.lam(t)), t)
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

__all__ = [
    "Path",
    "DiscreteVPPath",
    "LinearVPPath",
    "CosineVPPath",
    "VEPath",
    "EDMPath",
    "FlowPath",
    "TrigPath",
    "get_path",
    "PATHS",
    "ddpm_betas",
]


def _t(x, like: Tensor | None = None) -> Tensor:
    if isinstance(x, Tensor):
        return x
    dtype = like.dtype if like is not None else torch.float64
    return torch.as_tensor(x, dtype=dtype)


class Path:
    """Base class for a Gaussian path. Subclasses define ``alpha``, ``sigma``, ``lam``,
    ``t_of_lam`` and the derivatives ``dalpha``/``dsigma`` (used by flow-velocity adapters).

    ``t_min``/``t_max`` is the range the network was trained on; ``s_min``/``s_max`` the
    corresponding canonical noise levels.
    """

    name: str = "path"
    t_min: float
    t_max: float
    #: units of t as the network sees it (documentation only)
    time_units: str = "t"

    # -- to be provided -------------------------------------------------------------
    def alpha(self, t: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def sigma(self, t: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def dalpha(self, t: Tensor) -> Tensor:
        return _autograd_derivative(self.alpha, t)

    def dsigma(self, t: Tensor) -> Tensor:
        return _autograd_derivative(self.sigma, t)

    def lam(self, t: Tensor) -> Tensor:
        t = _t(t)
        return torch.log(self.alpha(t)) - torch.log(self.sigma(t))

    def t_of_lam(self, lam: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- derived --------------------------------------------------------------------
    def s(self, t: Tensor) -> Tensor:
        """Canonical noise level sigma/alpha."""
        t = _t(t)
        return self.sigma(t) / self.alpha(t)

    def t_of_s(self, s: Tensor) -> Tensor:
        s = _t(s)
        return self.t_of_lam(-torch.log(s))

    @property
    def s_min(self) -> float:
        return self._s_at(self.t_min)

    @property
    def s_max(self) -> float:
        return self._s_at(self.t_max)

    def _s_at(self, t: float) -> float:
        """s(t) for a Python float t, memoised per t (the range ends are read on every call of
        the driver)."""
        cache = self.__dict__.setdefault("_s_memo", {})
        v = cache.get(t)
        if v is None:
            v = cache[t] = float(self.s(torch.tensor(t, dtype=torch.float64)))
        return v

    def check_s(self, s: Tensor, what: str = "noise level") -> None:
        """Raise if any canonical noise level lies outside the trained range (tolerance 1e-9
        relative); ``s = 0`` is allowed because the network is never evaluated there."""
        levels = _t(s).double().reshape(-1).tolist()  # a grid is short: plain floats are cheapest
        lo, hi = self.s_min * (1 - 1e-9), self.s_max * (1 + 1e-9)
        bad = [v for v in levels if v > 0 and (v < lo or v > hi)]
        if bad:
            raise ValueError(
                f"{what} {bad[:4]} outside the trained range of path {self.name!r}: "
                f"s in [{self.s_min:.6g}, {self.s_max:.6g}] (t in [{self.t_min}, {self.t_max}])."
                " Pass a schedule within that range, or allow_extrapolation=True to evaluate anyway."
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, t in [{self.t_min}, {self.t_max}])"


def _require_order(*pairs: tuple[str, float], strict_low: bool = True) -> None:
    """Raise unless the named values are increasing: ``pairs`` = (name, value) from low to high,
    the first a bound (e.g. ``("0", 0.0)``); the message names every value."""
    vals = [v for _, v in pairs]
    ok = all(a < b for a, b in zip(vals[1:], vals[2:])) and all(math.isfinite(v) for v in vals)
    ok = ok and (vals[0] < vals[1] if strict_low else vals[0] <= vals[1])
    if not ok:
        chain = (" < " if strict_low else " <= ").join([pairs[0][0], pairs[1][0]])
        chain = " < ".join([chain] + [n for n, _ in pairs[2:]])
        got = ", ".join(f"{n}={v}" for n, v in pairs if n[0].isalpha())
        raise ValueError(f"need {chain}, got {got}")


def _autograd_derivative(fn: Callable[[Tensor], Tensor], t: Tensor) -> Tensor:
    with torch.enable_grad():
        tt = _t(t).detach().clone().requires_grad_(True)
        out = fn(tt)
        (g,) = torch.autograd.grad(out.sum(), tt)
    return g.detach()


# --------------------------------------------------------------------------------------
# VP paths: alpha^2 + sigma^2 = 1, so alpha^2 = sigmoid(2 lambda).
# --------------------------------------------------------------------------------------


def _vp_log_alpha_of_lam(lam: Tensor) -> Tensor:
    # log alpha = -1/2 log(1 + e^{-2 lambda}) = -1/2 softplus(-2 lambda)
    return -0.5 * torch.nn.functional.softplus(-2.0 * lam)


class _VPPath(Path):
    """Variance-preserving paths parameterised by log alpha(t)."""

    def log_alpha(self, t: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def t_of_log_alpha(self, la: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def alpha(self, t):
        return torch.exp(self.log_alpha(_t(t)))

    def sigma(self, t):
        la = self.log_alpha(_t(t))
        # sqrt(1 - alpha^2) = sqrt(-expm1(2 log alpha)), accurate near alpha = 1
        return torch.sqrt(-torch.expm1(2.0 * la))

    def lam(self, t):
        la = self.log_alpha(_t(t))
        return la - 0.5 * torch.log(-torch.expm1(2.0 * la))

    def t_of_lam(self, lam):
        return self.t_of_log_alpha(_vp_log_alpha_of_lam(_t(lam)))

    def dsigma(self, t):
        # sigma = sqrt(1 - alpha^2) -> dsigma = -alpha dalpha / sigma
        t = _t(t)
        return -self.alpha(t) * self.dalpha(t) / self.sigma(t)


def ddpm_betas(kind: str, n: int = 1000) -> Tensor:
    """DDPM beta tables: ``linear`` (1e-4..0.02, Ho et al.), ``scaled_linear`` (Stable
    Diffusion: sqrt-linear 0.00085..0.012), ``cosine`` (Nichol & Dhariwal, clipped at 0.999)."""
    if kind == "linear":
        return torch.linspace(1e-4, 0.02, n, dtype=torch.float64)
    if kind == "scaled_linear":
        return torch.linspace(0.00085**0.5, 0.012**0.5, n, dtype=torch.float64) ** 2
    if kind == "cosine":
        # squaredcos_cap_v2 as in improved DDPM: alpha_bar(t) = cos^2((t + s)/(1 + s) pi/2)
        def abar(u):
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

        b = [min(1 - abar((i + 1) / n) / abar(i / n), 0.999) for i in range(n)]
        return torch.tensor(b, dtype=torch.float64)
    raise ValueError(f"unknown beta schedule {kind!r}; accepted: 'linear', 'scaled_linear', 'cosine'")


class DiscreteVPPath(_VPPath):
    """A DDPM table: ``alpha_bar_k = prod_{j<=k} (1 - beta_j)``, k = 0..N-1.

    Between integer timesteps log alpha is interpolated linearly in t (as DPM-Solver's
    discrete-time schedule does), which makes ``t_of_lam`` the exact inverse of ``lam``.
    ``zero_terminal_snr=True`` rescales the table so that alpha_bar at the last step is 0
    (Lin et al., "Common Diffusion Noise Schedules and Sample Steps are Flawed"); the last
    timestep then has s = inf, so its trained range stops one step short.
    """

    time_units = "timestep index 0..N-1 (float)"

    def __init__(self, betas: Tensor | str = "linear", *, num_steps: int = 1000,
                 zero_terminal_snr: bool = False, name: str | None = None):
        if isinstance(betas, str):
            label = betas.replace("_", "-")  # the registry's spelling: ddpm-scaled-linear
            betas = ddpm_betas(betas, num_steps)
        else:
            label = "custom"
            betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or betas.numel() < 2:
            raise ValueError(f"betas must be a 1-D table of length >= 2, got shape {tuple(betas.shape)}")
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("betas must lie in (0, 1)")
        abar = torch.cumprod(1.0 - betas, 0)
        if zero_terminal_snr:
            abar = rescale_zero_terminal_snr(abar)
        self.alphas_cumprod = abar
        self.betas = betas
        la = 0.5 * torch.log(abar)
        self._log_alpha_table = la
        self.num_steps = betas.numel()
        self.t_min = 0.0
        self.t_max = float(self.num_steps - 1 - (1 if zero_terminal_snr else 0))
        self.name = name or f"ddpm-{label}" + ("-ztsnr" if zero_terminal_snr else "")

    def _segment(self, t) -> tuple[Tensor, Tensor, Tensor]:
        """(t clamped to the table, k, table): t lies on the segment [k, k + 1] of log alpha."""
        tab = self._log_alpha_table
        tc = _t(t).to(torch.float64).clamp(0, tab.numel() - 1)
        return tc, tc.floor().clamp(max=tab.numel() - 2).long(), tab

    def log_alpha(self, t):
        tc, k, tab = self._segment(t)
        w = tc - k
        lo, hi = tab[k], tab[k + 1]
        # guard -inf (zero terminal SNR) so that w = 0 returns the table entry exactly
        return torch.where(w > 0, lo + w * (hi - lo), lo)

    def dalpha(self, t):
        t = _t(t).to(torch.float64)
        tc, k, tab = self._segment(t)
        slope = tab[k + 1] - tab[k]
        # at a table entry whose right-hand segment ends at alpha = 0 (zero terminal SNR: log
        # alpha = -inf at the last entry) the right slope is -inf; t_max is that entry, so the
        # derivative there is the left one (the segment inside the trained range)
        left = (tc == k) & (k > 0) & ~torch.isfinite(slope)
        if bool(left.any()):
            slope = torch.where(left, tab[k] - tab[(k - 1).clamp(min=0)], slope)
        return self.alpha(t) * slope

    def t_of_log_alpha(self, la):
        la = _t(la).to(torch.float64)
        tab = self._log_alpha_table  # decreasing in k
        n = tab.numel()
        # searchsorted on the increasing sequence -tab
        neg = -tab
        x = -la
        idx = torch.searchsorted(neg, x.reshape(-1).contiguous()).reshape(x.shape)
        k = (idx - 1).clamp(0, n - 2)
        x0, x1 = neg[k], neg[k + 1]
        fin = torch.isfinite(x1)
        w = torch.where(fin, (x - x0) / torch.where(fin, x1 - x0, torch.ones_like(x1)), torch.zeros_like(x))
        return (k.to(torch.float64) + w).clamp(0, n - 1)


def rescale_zero_terminal_snr(alphas_cumprod: Tensor) -> Tensor:
    """Algorithm 1 of Lin et al. (2024): shift and scale sqrt(alpha_bar) so that the last
    entry is exactly 0 while the first is unchanged."""
    a = alphas_cumprod.sqrt()
    a0, aT = a[0].clone(), a[-1].clone()
    a = (a - aT) * a0 / (a0 - aT)
    return a**2


class LinearVPPath(_VPPath):
    """Continuous VP SDE of Song et al. with linear beta(t) = b0 + t (b1 - b0), t in [eps, 1]:
    log alpha(t) = -t^2 (b1 - b0)/4 - t b0/2."""

    time_units = "t in [0, 1]"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-3,
                 t_max: float = 1.0, name: str = "vp-linear"):
        _require_order(("0", 0.0), ("beta_min", float(beta_min)), strict_low=False)
        _require_order(("0", 0.0), ("beta_max", float(beta_max)))
        _require_order(("0", 0.0), ("t_min", float(t_min)), ("t_max", float(t_max)))
        self.b0, self.b1 = float(beta_min), float(beta_max)
        self.t_min, self.t_max, self.name = t_min, t_max, name

    def log_alpha(self, t):
        t = _t(t)
        return -0.25 * t**2 * (self.b1 - self.b0) - 0.5 * t * self.b0

    def dalpha(self, t):
        t = _t(t)
        return self.alpha(t) * (-0.5 * t * (self.b1 - self.b0) - 0.5 * self.b0)

    def t_of_log_alpha(self, la):
        # solve (b1-b0)/4 t^2 + b0/2 t + la = 0 for t >= 0 (numerically stable root)
        la = _t(la)
        a, b = 0.25 * (self.b1 - self.b0), 0.5 * self.b0
        disc = b * b - 4 * a * la
        return (-2.0 * la) / (b + torch.sqrt(disc))


class CosineVPPath(_VPPath):
    """Continuous cosine schedule (Nichol & Dhariwal) as used by DPM-Solver:
    alpha(t) = cos((t + s0)/(1 + s0) pi/2) / cos(s0/(1 + s0) pi/2), t in [eps, t_max]."""

    time_units = "t in [0, 1]"

    def __init__(self, s0: float = 0.008, t_min: float = 1e-3, t_max: float = 0.9946,
                 name: str = "vp-cosine"):
        _require_order(("0", 0.0), ("t_min", float(t_min)), ("t_max", float(t_max)), ("1", 1.0))
        self.s0, self.t_min, self.t_max, self.name = s0, t_min, t_max, name
        self._log_a0 = math.log(math.cos(s0 / (1 + s0) * math.pi / 2))

    def log_alpha(self, t):
        t = _t(t)
        return torch.log(torch.cos((t + self.s0) / (1 + self.s0) * math.pi / 2)) - self._log_a0

    def dalpha(self, t):
        t = _t(t)
        u = (t + self.s0) / (1 + self.s0) * math.pi / 2
        return -torch.sin(u) * (math.pi / 2 / (1 + self.s0)) / math.exp(self._log_a0)

    def t_of_log_alpha(self, la):
        la = _t(la)
        return 2 * (1 + self.s0) / math.pi * torch.acos(torch.exp(la + self._log_a0)) - self.s0


# --------------------------------------------------------------------------------------
# alpha = 1 paths: VE and EDM (then s = sigma, y = x).
# --------------------------------------------------------------------------------------


class EDMPath(Path):
    """EDM (Karras et al. 2022): alpha = 1, sigma = t; t is sigma itself."""

    time_units = "sigma"

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, name: str = "edm"):
        _require_order(("0", 0.0), ("sigma_min", float(sigma_min)), ("sigma_max", float(sigma_max)))
        self.t_min, self.t_max, self.name = float(sigma_min), float(sigma_max), name

    def alpha(self, t):
        t = _t(t)
        return torch.ones_like(t)

    def sigma(self, t):
        return _t(t)

    def dalpha(self, t):
        return torch.zeros_like(_t(t))

    def dsigma(self, t):
        return torch.ones_like(_t(t))

    def lam(self, t):
        return -torch.log(_t(t))

    def t_of_lam(self, lam):
        return torch.exp(-_t(lam))


class VEPath(Path):
    """Score-SDE VE path: alpha = 1, sigma(t) = sigma_min (sigma_max/sigma_min)^t, t in [0, 1]."""

    time_units = "t in [0, 1]"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, t_min: float = 0.0,
                 t_max: float = 1.0, name: str = "ve"):
        _require_order(("0", 0.0), ("sigma_min", float(sigma_min)), ("sigma_max", float(sigma_max)))
        if not t_min < t_max:
            raise ValueError(f"need t_min < t_max, got t_min={t_min}, t_max={t_max}")
        self.smin, self.smax = float(sigma_min), float(sigma_max)
        self._log_ratio = math.log(self.smax / self.smin)
        self.t_min, self.t_max, self.name = t_min, t_max, name

    def alpha(self, t):
        return torch.ones_like(_t(t))

    def sigma(self, t):
        return self.smin * torch.exp(_t(t) * self._log_ratio)

    def dalpha(self, t):
        return torch.zeros_like(_t(t))

    def dsigma(self, t):
        return self.sigma(t) * self._log_ratio

    def lam(self, t):
        return -torch.log(self.sigma(t))

    def t_of_lam(self, lam):
        return (-_t(lam) - math.log(self.smin)) / self._log_ratio


# --------------------------------------------------------------------------------------
# Interpolants: rectified flow and the trigonometric interpolant.
# --------------------------------------------------------------------------------------


class _UnitTimePath(Path):
    """A path on t in [0, 1) whose canonical level is infinite at t = 1: the trained range
    [t_min, t_max] must stay inside it."""

    time_units = "t in [0, 1]"
    default_name = "unit"

    def __init__(self, t_min: float = 1e-3, t_max: float = 0.999, name: str | None = None):
        if not 0 <= t_min < t_max < 1:
            raise ValueError(f"need 0 <= t_min < t_max < 1, got t_min={t_min}, t_max={t_max}")
        self.t_min, self.t_max, self.name = t_min, t_max, name or self.default_name


class FlowPath(_UnitTimePath):
    """Rectified flow / flow matching: alpha = 1 - t, sigma = t, t in [0, 1].

    In canonical space s = t / (1 - t) is infinite at t = 1, so sampling starts at ``t_max``
    (default 0.999, s = 999); the dropped interval changes the start by O(1 - t_max).
    ``t_min`` (default 1e-3, s = 0.001) is the smallest level a default schedule evaluates."""

    default_name = "flow"

    def alpha(self, t):
        return 1.0 - _t(t)

    def sigma(self, t):
        return _t(t)

    def dalpha(self, t):
        return -torch.ones_like(_t(t))

    def dsigma(self, t):
        return torch.ones_like(_t(t))

    def lam(self, t):
        t = _t(t)
        return torch.log1p(-t) - torch.log(t)

    def t_of_lam(self, lam):
        return torch.sigmoid(-_t(lam))

    @property
    def s_min(self) -> float:
        return self.t_min / (1 - self.t_min)


class TrigPath(_UnitTimePath):
    """Trigonometric interpolant: alpha = cos(pi t / 2), sigma = sin(pi t / 2), t in [0, 1]
    (a VP path; s = tan(pi t / 2))."""

    default_name = "trig"

    def alpha(self, t):
        return torch.cos(_t(t) * (math.pi / 2))

    def sigma(self, t):
        return torch.sin(_t(t) * (math.pi / 2))

    def dalpha(self, t):
        return -(math.pi / 2) * torch.sin(_t(t) * (math.pi / 2))

    def dsigma(self, t):
        return (math.pi / 2) * torch.cos(_t(t) * (math.pi / 2))

    def lam(self, t):
        return -torch.log(torch.tan(_t(t) * (math.pi / 2)))

    def t_of_lam(self, lam):
        return torch.atan(torch.exp(-_t(lam))) * (2 / math.pi)

    @property
    def s_min(self) -> float:
        return math.tan(self.t_min * math.pi / 2)


@dataclass(frozen=True)
class _PathEntry:
    factory: Callable[[], Path]
    doc: str


PATHS: dict[str, _PathEntry] = {
    "ddpm-linear": _PathEntry(lambda: DiscreteVPPath("linear"), "DDPM table, linear betas 1e-4..0.02, 1000 steps"),
    "ddpm-scaled-linear": _PathEntry(lambda: DiscreteVPPath("scaled_linear"), "Stable Diffusion table, scaled linear 0.00085..0.012"),
    "ddpm-cosine": _PathEntry(lambda: DiscreteVPPath("cosine"), "Nichol & Dhariwal cosine table"),
    "ddpm-scaled-linear-ztsnr": _PathEntry(lambda: DiscreteVPPath("scaled_linear", zero_terminal_snr=True), "SD table rescaled to zero terminal SNR"),
    "vp-linear": _PathEntry(LinearVPPath, "continuous VP SDE, beta 0.1..20"),
    "vp-cosine": _PathEntry(CosineVPPath, "continuous cosine VP"),
    "ve": _PathEntry(VEPath, "score-SDE VE, sigma 0.01..50"),
    "edm": _PathEntry(EDMPath, "EDM: alpha = 1, sigma = t in [0.002, 80]"),
    "flow": _PathEntry(FlowPath, "rectified flow: alpha = 1 - t, sigma = t"),
    "trig": _PathEntry(TrigPath, "trigonometric interpolant: cos / sin"),
}


def get_path(name: str | Path) -> Path:
    """A path by name (see ``PATHS``), or the path itself."""
    if isinstance(name, Path):
        return name
    if not isinstance(name, str) or name not in PATHS:
        raise ValueError(f"unknown path {name!r}; accepted: {', '.join(PATHS)} or a Path object")
    return PATHS[name].factory()
