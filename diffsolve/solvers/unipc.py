"""UniPC in data-prediction form (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework
for Fast Sampling of Diffusion Models").

Canonical space, h = lambda_{i+1} - lambda_i, lambda = -log s.  Both the predictor UniP-p and
the corrector UniC-p are one update (the paper's "unified analytical form"): from a level s
with denoised output D_s, using extra points (s_k, D_k) at relative log-SNR offsets
r_k = (lambda_k - lambda_s)/h,

    y_next = (s_next/s) y  -  expm1(-h) D_s  +  B(h) sum_k a_k (D_k - D_s) / r_k   (U) [UniPC Eq. 8]

with B(h) = h ("bh1") or B(h) = 1 - e^{-h} = -expm1(-h) ("bh2").  Expanding D in lambda
around lambda_s, (D_k - D_s)/r_k = sum_{n>=1} r_k^{n-1} h^n D^(n)/n!, and the exact integral
int_0^h e^{-(h-tau)} tau^n/n! dtau = h^n c_n(h)/n!, with

    c_0 = -expm1(-h),     c_n = 1 - n c_{n-1} / h                                      (C)

so (U) matches the Taylor series up to D^(m) when the a_k solve the order conditions

    sum_k a_k r_k^{n-1} = c_n(h) / B(h),     n = 1 .. m                                 (R)

(the paper's linear system R_p(h) a_p = phi_p(h)/B(h) of UniC-p / UniP-p, here in its
data-prediction form).  A system
with a single unknown is replaced, as in the authors' code and diffusers, by its h -> 0 limit
a_1 = 1/2 (for both B); this keeps the order.

* UniP-p (predictor, step i): s = s_i, extra points s_{i-1} .. s_{i-p+1} (p - 1 unknowns):
  order p.
* UniC-p (corrector, applied at the start of step i + 1, once D_{i+1} = D(y_{i+1}, s_{i+1}) is
  known): the same update from s_i to s_{i+1}, with the points s_{i-1} .. s_{i-p+1} *and*
  s_{i+1} itself (r = 1): order p + 1, without an extra evaluation.  The corrected y_{i+1}
  then feeds the next predictor; D_{i+1} (evaluated at the uncorrected point) is kept as is.
  The last step is never corrected (no evaluation follows it), so NFE = number of steps.

Step-order semantics follow diffusers' ``UniPCMultistepScheduler`` (predict_x0, bh1/bh2,
``disable_corrector=[]``): warm-up order min(order, i + 1); with ``lower_order_final``
(default True) the order at step i is also capped at n_steps - i *whatever the number of
steps* (diffusers' UniPC rule, unlike DPM-Solver++'s "< 15 steps"); the corrector applied at
step i has the order of the predictor of step i - 1.  A step to s = 0 is the first-order limit
y = D (diffusers' bh1 returns NaN there, bh2 returns D).  Because of that rule the default
run ends with a first-order step, which caps the global order at 2; pass
``lower_order_final=False`` for high-accuracy runs to s_min (the order tests do).

When p > 1 unknowns are solved for, B(h) cancels from (U): bh1 and bh2 differ only where a
single coefficient is set to 1/2 (UniP-2, UniC-1).  UniP-2 with bh2 is DPM-Solver++(2M) and
UniP-3 is DPM-Solver++(3M) with the full Taylor coefficient (tests/test_multistep.py).

Hooks: the corrector recomputes y_{i+1} from y_i and the denoised outputs, so a hook that
edits the state's y between steps (data consistency) sees its edit replaced by the corrected
value, as in diffusers; use ``corrector=False`` with such hooks.

Example: the corrector costs no evaluation, and raises the order::

    >>> import diffsolve
    >>> z = diffsolve.NoiseSource.initial([0, 1, 2, 3], (2,))
    >>> [diffsolve.sample(diffsolve.exact_model("gmm-2d"), z, solver="unipc", nfe=6, corrector=c).nfe
    ...  for c in (True, False)]
    [6, 6]
    >>> diffsolve.get_solver("unipc", corrector=False).order, diffsolve.get_solver("unipc").order
    (2, 3)
"""

from __future__ import annotations

import math
from typing import Sequence

from torch import Tensor

from .base import Solver, SolverState, register
from .euler import ddim_update
from .kit import check_bool, check_int, check_lower_order_final, multistep_order, step_size

__all__ = ["UniPCBh1", "UniPCBh2", "unipc_update", "unipc_coefficients"]

#: B(h) of [UniPC Eq. 8] in data-prediction form
B_FUNCTIONS = {
    "bh1": lambda h: h,
    "bh2": lambda h: -math.expm1(-h),
}


def _solve(A: list[list[float]], b: list[float]) -> list[float]:
    """Solve the small dense system A a = b (m <= 3) by Gaussian elimination with partial pivoting."""
    m = len(b)
    M = [row[:] + [v] for row, v in zip(A, b)]
    for c in range(m):
        p = max(range(c, m), key=lambda r: abs(M[r][c]))
        M[c], M[p] = M[p], M[c]
        for r in range(c + 1, m):
            f = M[r][c] / M[c][c]
            M[r] = [x - f * y for x, y in zip(M[r], M[c])]
    a = [0.0] * m
    for r in range(m - 1, -1, -1):
        a[r] = (M[r][m] - sum(M[r][k] * a[k] for k in range(r + 1, m))) / M[r][r]
    return a


def unipc_coefficients(rs: Sequence[float], h: float, B: float) -> list[float]:
    """Solve the order conditions (R) for the weights a_k of the points at offsets ``rs``
    (the paper's R_p(h) a_p = phi_p(h) / B(h), data-prediction form)."""
    m = len(rs)
    if m == 1:
        return [0.5]  # one unknown: its h -> 0 limit a_1 = 1/2 (authors' code, diffusers)
    c = -math.expm1(-h)  # c_0
    rhs = []
    for n in range(1, m + 1):
        c = 1 - n * c / h  # (C)
        rhs.append(c / B)
    R = [[r ** (n - 1) for r in rs] for n in range(1, m + 1)]  # row n: r_k^{n-1}
    return _solve(R, rhs)


def unipc_update(y: Tensor, s: float, s_next: float, d: Tensor, points: Sequence[tuple[float, Tensor]],
                 variant: str) -> Tensor:
    """The unified update (U) [UniPC Eq. 8] from level s (denoised ``d``) to s_next > 0, with extra
    points ``(level, denoised)``; no points gives the first-order (DDIM) step.  Levels are
    Python floats (0-dim CPU tensors are read as floats)."""
    s, s_next = float(s), float(s_next)
    if not points:
        return ddim_update(y, d, s, s_next)
    h = step_size(s, s_next)
    rs = [step_size(s, float(lev)) / h for lev, _ in points]
    B = B_FUNCTIONS[variant](h)
    a = unipc_coefficients(rs, h, B)
    y_next = (s_next / s) * y - math.expm1(-h) * d
    corr = sum((a[k] / rs[k]) * (dk - d) for k, (_, dk) in enumerate(points))
    return y_next + B * corr


class _UniPC(Solver):
    variant = "bh2"
    paper = "UniPC (Zhao et al. 2023), UniP-p / UniC-p, data prediction"
    nfe_rule = "1 per step (the corrector reuses the next step's evaluation)"
    default_schedule = "log-snr"
    ORDERS = (1, 2, 3)

    def __init__(self, order: int = 2, corrector: bool = True, lower_order_final: bool = True):
        self.max_order = check_int(self.owner, "order", order, self.ORDERS)
        self.corrector = check_bool(self.owner, "corrector", corrector)
        self.lower_order_final = check_lower_order_final(lower_order_final, self.owner)
        #: order of accuracy of this configuration: UniC-p raises UniP-p to p + 1 (class: default p = 2)
        self.order = self.max_order + 1 if corrector else self.max_order

    def _order(self, i: int, n: int, to_zero: bool) -> int:
        return multistep_order(i, n, self.max_order, self.lower_order_final, to_zero, below=None)

    def step(self, state: SolverState, denoise) -> SolverState:
        i, y, hist, at = state.i, state.y, state.history, state.at
        s, s_next = at(i), at(i + 1)
        d = denoise(y, s)
        if self.corrector and i > 0:
            # UniC-p on the previous step s_{i-1} -> s_i, p the order of that step's predictor
            p = self._order(i - 1, state.n_steps, False)
            pts = [(at(i - 1 - k), hist[-1 - k]) for k in range(1, p)] + [(s, d)]
            y = unipc_update(state.extra["unipc_y"], at(i - 1), s, hist[-1], pts, self.variant)
        k = self._order(i, state.n_steps, s_next == 0)
        if k == 1:
            y_next = ddim_update(y, d, s, s_next)  # UniP-1, and the exact limit y = D at s = 0
        else:
            pts = [(at(i - j), hist[-j]) for j in range(1, k)]  # UniP-k
            y_next = unipc_update(y, s, s_next, d, pts, self.variant)
        extra = {**state.extra, "unipc_y": y} if self.corrector else state.extra
        return state.replace(y=y_next, i=i + 1, history=self.push(hist, d, self.max_order), extra=extra, x0=d)


@register
class UniPCBh1(_UniPC):
    """UniPC with B(h) = h. Options: ``order`` (1..3, default 2), ``corrector`` (default True),
    ``lower_order_final`` (default True)."""

    name = "unipc-bh1"
    aliases = ("unipc_bh1",)
    order = 3
    variant = "bh1"
    stability_advice = ("measured on the exact mixtures: samples up to 8x the data's RMS at nfe=4 (time grid) and "
                        "5.5x at nfe=5 (karras, flow); unipc (B(h) = e^h - 1) stayed within 1.9x on every grid measured")
    paper = "UniPC (Zhao et al. 2023), B(h) = h, data prediction"


@register
class UniPCBh2(_UniPC):
    """UniPC with B(h) = e^h - 1 (data prediction: 1 - e^{-h}). Options as :class:`UniPCBh1`."""

    name = "unipc-bh2"
    aliases = ("unipc", "unipc_bh2")
    order = 3
    variant = "bh2"
    paper = "UniPC (Zhao et al. 2023), B(h) = e^h - 1, data prediction"
