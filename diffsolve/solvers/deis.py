"""DEIS (Zhang & Chen 2022, "Fast Sampling of Diffusion Models with Exponential Integrator"):
multistep exponential integrators with a polynomial extrapolation of the noise prediction.

The time variable.  The paper writes the probability-flow ODE of a VP model as a semilinear
ODE in x and removes the linear part with the exponential integrator; the remaining integral
of the noise prediction eps_theta is approximated by a Lagrange polynomial through the last
r + 1 points (tAB-DEIS: polynomial in the model time t, coefficients by quadrature).  The
paper also uses the reparameterisation (rhoAB-DEIS)

    y = x / alpha,   rho = sigma / alpha,

in which the ODE becomes dy/drho = eps_theta(x, t): no linear part is left, and the
exponential integrator is plain integration.  rho is our canonical level s; with
x = alpha x0 + sigma eps, y = x0 + s eps, so the noise prediction is eps = (y - D(y, s)) / s
and in canonical space

    dy/ds = eps(y, s),      y_{i+1} = y_i + int_{s_i}^{s_{i+1}} eps(y(s), s) ds.

A solver that must not depend on the path (DESIGN.md) cannot use the model's t, so this
implementation takes the polynomial in s = rho (rhoAB-DEIS, ``variable="s"``) or in log s (below,
the default).  In s: with P the Lagrange polynomial of
degree q - 1 through (s_{i-j}, eps_{i-j}), j = 0 .. q - 1,

    y_{i+1} = y_i + (s_{i+1} - s_i) sum_j w_j eps_{i-j},
    w_j = int_0^1 l_j(u) du,   u = (s - s_i)/(s_{i+1} - s_i),              (AB) [DEIS Eq. 15]

l_j the Lagrange basis on the nodes u_j = (s_{i-j} - s_i)/(s_{i+1} - s_i).  (AB) is exactly the
variable-step Adams-Bashforth method of order q on dy/ds = eps, so non-uniform grids keep the
order; q = 1 is DDIM.  The weights are integrated exactly (two-point Gauss-Legendre is exact
for the cubic l_j of q <= 4).  Both variables: warm-up with lower orders (step i uses
min(order, i + 1)); a step to s = 0 is the first-order limit y = D (house convention; see
solvers/base.py); ``state.history`` holds eps (not D) at the previous levels.  The paper has no
lower-order final steps, so ``lower_order_final`` defaults to False; True (diffusers' rule) and
``"last"`` (only the last step first order) follow :func:`~diffsolve.solvers.dpmpp.multistep_order`
and matter on grids that stop at s_min > 0 (``final="s_min"``), whose last step is long.

The log-rho variable (``variable="log-s"``, the default).  The DEIS authors' code and diffusers'
``DEISMultistepScheduler`` fit the polynomial in log(rho) instead.  With lambda = -log s
(ds = -e^{-lambda} dlambda) the step reads

    y_{i+1} = y_i - int_{lambda_i}^{lambda_{i+1}} e^{-lambda} eps(lambda) dlambda,   (EI) [DEIS Eq. 11]

the exponential-integrator form of the paper (its Eq. (11) with the linear part removed).
Replacing eps by the Lagrange polynomial in u = lambda - lambda_i through the nodes
u_j = lambda_{i-j} - lambda_i <= 0, j = 0 .. q - 1, and integrating exactly,

    y_{i+1} = y_i - s_i sum_j W_j eps_{i-j},   W_j = int_0^h e^{-u} l_j(u) du,  h = lambda_{i+1} - lambda_i,  (EI-q)

with l_j(u) = sum_k c_jk u^k and the moments

    M_k(h) = int_0^h e^{-u} u^k du = k! (1 - e^{-h} sum_{m<=k} h^m / m!)
           = sum_{n>=0} (-1)^n h^{n+k+1} / (n! (n + k + 1))                                    (M)

(the series for h < 1, where the closed form cancels).  q = 1 gives W_0 = 1 - e^{-h}, i.e.
y_{i+1} = y_i + (s_{i+1} - s_i) eps_i: DDIM.  (EI-q) is multistep DPM-Solver in noise-prediction
form (Lu et al. 2022); being a polynomial in lambda it fits eps better where eps varies on the
scale of log s, which is the usual case.  The coefficients are Python floats from the CPU grid.

iPNDM (solvers/ipndm.py) is the rho-variable scheme with orders up to 4: it shares :func:`ab_update`.

Example: the weights of (EI-q) on a three-level history (they sum to 1 - e^{-h})::

    >>> w = ei_weights([1.0, 2.0, 4.0], 0.5)
    >>> round(sum(w), 12) == round(1 - 0.5 / 1.0, 12)
    True
"""

from __future__ import annotations

import math
from typing import Sequence

from torch import Tensor

from .base import Solver, SolverState, register
from .euler import ddim_update
from .kit import bc, check_choice, check_int, check_lower_order_final, eps_of, multistep_order, step_size

__all__ = ["DEIS", "ab_weights", "ab_update", "ei_moments", "ei_weights"]

# two-point Gauss-Legendre on [0, 1]: exact for polynomials of degree <= 3
_GL_NODES = (0.5 - 0.5 / math.sqrt(3.0), 0.5 + 0.5 / math.sqrt(3.0))


def ab_weights(levels: Sequence[float], s_next: float) -> list[float]:
    """Variable-step Adams-Bashforth weights (AB) [DEIS Eq. 15 in rho] for nodes
    ``levels = (s_i, s_{i-1}, ...)`` (Python floats; 0-dim or 1-D CPU tensors are read as floats).

    >>> ab_weights([2.0, 3.0], 1.0)
    [1.5, -0.5]
    """
    levels, s_next = [float(v) for v in levels], float(s_next)
    q = len(levels)
    if q > 4:
        raise ValueError(f"Adams-Bashforth order must be at most 4, got {q}")
    u_nodes = [(v - levels[0]) / (s_next - levels[0]) for v in levels]
    w = []
    for j in range(q):
        lj = [1.0, 1.0]  # l_j at the two Gauss-Legendre nodes
        for m in range(q):
            if m != j:
                lj = [v * (u - u_nodes[m]) / (u_nodes[j] - u_nodes[m]) for v, u in zip(lj, _GL_NODES)]
        w.append((lj[0] + lj[1]) / 2)  # GL weights are 1/2 each on [0, 1]
    return w


def ab_update(y: Tensor, levels: Sequence[float], s_next: float, eps: Sequence[Tensor]) -> Tensor:
    """y_{i+1} = y_i + (s_{i+1} - s_i) sum_j w_j eps_{i-j}; ``eps[j]`` at ``levels[j]`` (current first)."""
    levels = [float(v) for v in levels]
    w = ab_weights(levels, s_next)
    inc = sum(wj * e for wj, e in zip(w, eps))
    return y + bc(float(s_next) - levels[0], y) * inc


def ei_moments(h: float, kmax: int) -> list[float]:
    """M_k(h) = int_0^h e^{-u} u^k du for k = 0 .. kmax, Eq. (M) (series for h < 1).

    >>> [round(m, 12) for m in ei_moments(1.0, 2)]
    [0.632120558829, 0.264241117657, 0.160602794143]
    """
    if not h >= 0 or math.isinf(h):
        raise ValueError(f"step h in lambda must be finite and >= 0, got {h!r}")
    out = []
    for k in range(kmax + 1):
        if h < 1.0:
            m, term, n = 0.0, 1.0, 0  # term = (-h)^n / n!
            while True:
                add = term * h ** (k + 1) / (n + k + 1)
                m += add
                if abs(add) <= 1e-17 * abs(m) or n > 60:
                    break
                n += 1
                term *= -h / n
        else:
            part = sum(h ** j / math.factorial(j) for j in range(k + 1))
            m = math.factorial(k) * (1.0 - math.exp(-h) * part)
        out.append(m)
    return out


def ei_weights(levels: Sequence[float], s_next: float) -> list[float]:
    """W_j of Eq. (EI-q) for nodes ``levels = (s_i, s_{i-1}, ...)`` (Python floats, s_next > 0).

    >>> w = ei_weights([2.0], 1.0)  # q = 1: W_0 = 1 - e^{-h} = 1 - s_{i+1}/s_i
    >>> round(w[0], 12)
    0.5
    """
    q = len(levels)
    if q > 4:
        raise ValueError(f"exponential-integrator order must be at most 4, got {q}")
    h = step_size(levels[0], s_next)
    u = [-step_size(s, levels[0]) for s in levels]  # u_j = lambda_{i-j} - lambda_i: u_0 = 0 > u_1 > ...
    mom = ei_moments(h, q - 1)
    w = []
    for j in range(q):
        coef = [1.0]  # l_j(u) = prod_{m != j} (u - u_m) / (u_j - u_m), coefficients in powers of u
        for m in range(q):
            if m != j:
                den = u[j] - u[m]
                coef = [((coef[k - 1] if k > 0 else 0.0) - u[m] * (coef[k] if k < len(coef) else 0.0)) / den
                        for k in range(len(coef) + 1)]
        w.append(sum(c * mk for c, mk in zip(coef, mom)))
    return w


class _AdamsBashforthS(Solver):
    """Shared multistep step on dy/ds = eps with lower-order warm start."""

    ORDERS: tuple[int, ...] = (1, 2, 3)
    default_order = 3
    default_schedule = "log-snr"
    variable = "s"

    def __init__(self, order: int | None = None, lower_order_final: bool | str = False):
        #: the instance's order is its ``order`` option (class attribute: the default)
        self.order = check_int(self.owner, "order", self.default_order if order is None else order, self.ORDERS)
        self.lower_order_final = check_lower_order_final(lower_order_final, self.owner)

    def step(self, state: SolverState, denoise) -> SolverState:
        i, y, at = state.i, state.y, state.at
        s, s_next = at(i), at(i + 1)
        d = denoise(y, s)
        eps = eps_of(y, d, s)
        hist = state.history  # eps at s_{i-1}, s_{i-2}, ... (most recent last)
        to_zero = s_next == 0
        q = multistep_order(i, state.n_steps, self.order, self.lower_order_final, to_zero)
        if q == 1 and (self.variable == "s" or to_zero):
            y_next = ddim_update(y, d, s, s_next)  # = y + (s_next - s) eps; y = D at s = 0
        else:
            eps_q = [eps] + [hist[-j] for j in range(1, q)]  # eps_i, eps_{i-1}, ..., eps_{i-q+1}
            levels = [at(i - j) for j in range(q)]  # s_i, s_{i-1}, ..., s_{i-q+1}
            if self.variable == "log-s":
                w = ei_weights(levels, s_next)  # (EI-q)
                y_next = y - levels[0] * sum(wj * e for wj, e in zip(w, eps_q))
            else:
                y_next = ab_update(y, levels, s_next, eps_q)  # (AB)
        return state.replace(y=y_next, i=i + 1, history=self.push(hist, eps, self.order - 1), x0=d)


@register
class DEIS(_AdamsBashforthS):
    """DEIS: Lagrange extrapolation of eps in log(rho) = log s (``variable="log-s"``, Eq. (EI-q)) or in
    rho = s (``variable="s"``, rhoAB-DEIS, Eq. (AB)), integrated exactly (order 1..3, default 3)."""

    name = "deis"
    aliases = ("deis-tab", "deis-rhoab")
    order = 3
    ORDERS = (1, 2, 3)
    default_order = 3
    paper = "DEIS (Zhang & Chen 2022): polynomial in log(rho) (default) or rho = sigma/alpha"
    VARIABLES = ("log-s", "s")

    def __init__(self, order: int | None = None, variable: str = "log-s", lower_order_final: bool | str = False):
        super().__init__(order, lower_order_final)
        self.variable = check_choice(self.owner, "variable", variable, self.VARIABLES)
