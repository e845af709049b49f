"""The convergence tests' reference (tests/orders.py: RK4 in lambda, 400 steps) is itself
accurate: it agrees with an independent adaptive Dormand-Prince solve (torchdiffeq dopri5,
rtol = atol = 1e-10, on dy/dlambda = D - y) on gmm-64, and RK4 shows its fourth order, both on
gmm-64 against that solve and on a Gaussian whose trajectory is known in closed form.

Measured (ddpm-linear, s_min = 5): RK4-400 vs dopri5 (512 evaluations) 3.8e-10 RMS, RK4 slope
4.16 over 10/20/40 steps; down to the path's s_min = 0.01: RK4-400 vs dopri5 5e-9 (1106
evaluations; RK4-800 agrees with dopri5 to 4e-10), RK4 slope 3.99 over 100/200/400 steps.
Gaussian (80 -> 0.01): RK4-400 error 8e-9, slope 4.18 over 20/40/80 steps.
"""

from __future__ import annotations

import math
from functools import lru_cache

import pytest
import torch

import diffsolve
from diffsolve.models.gmm import GaussianMixture
from orders import REF_NFE, reference, rms, setup, slope

torchdiffeq = pytest.importorskip("torchdiffeq")

PATH, S_MIN = "ddpm-linear", 5.0  # the convergence tests' regime (test_convergence_singlestep)


def _grid(s_min=S_MIN, path=PATH):
    return diffsolve.make_schedule("log-snr", 1, path=path, s_min=s_min, final="s_min")


@lru_cache(maxsize=None)
def dopri5_solution() -> torch.Tensor:
    g, noise = setup("gmm-64", PATH)
    sig = _grid()

    def f(lam, y):
        return g(y, torch.exp(-lam).expand(y.shape[0])) - y

    return torchdiffeq.odeint(f, noise * sig[0], -torch.log(sig), rtol=1e-10, atol=1e-10, method="dopri5")[-1]


def test_reference_agrees_with_dopri5():
    ref = reference("gmm-64", PATH, "log-snr", "s_min", S_MIN)
    assert REF_NFE == 4 * 400
    assert rms(ref, dopri5_solution()) < 1e-7


def test_rk4_is_fourth_order_on_gmm64():
    g, noise = setup("gmm-64", PATH)
    truth = dopri5_solution()
    steps = (10, 20, 40)
    errs = [rms(diffsolve.sample(g, noise, solver="rk4", nfe=4 * n, schedule="log-snr", path=PATH,
                                 final="s_min", s_min=S_MIN).samples, truth) for n in steps]
    assert abs(slope(steps, errs) - 4) < 0.3, errs


def test_rk4_is_fourth_order_on_a_gaussian_in_closed_form():
    """Data N(mu, C) with C = U diag(d) U^T + c I: along the flow, y(s) - mu evolves in each
    eigendirection of C (variance v) by the factor sqrt((v + s^2) / (v + s_0^2))."""
    n, r, c = 16, 3, 0.05
    gen = torch.Generator().manual_seed(1)
    U = torch.linalg.qr(torch.randn(n, r, dtype=torch.float64, generator=gen))[0]
    d = torch.tensor([2.0, 0.5, 0.01], dtype=torch.float64)
    mu = torch.randn(n, dtype=torch.float64, generator=gen)
    gauss = GaussianMixture(torch.ones(1), mu[None], torch.tensor([c]), U[None], d[None])
    noise = torch.randn(8, n, dtype=torch.float64, generator=gen)
    s0, s1 = 80.0, 0.01
    v0 = noise * s0 - mu
    along = v0 @ U
    factor = lambda v: math.sqrt((v + s1**2) / (v + s0**2))
    exact = mu + (v0 - along @ U.T) * factor(c) + (along * torch.tensor([factor(c + x) for x in d.tolist()])) @ U.T
    steps = (20, 40, 80)
    errs = [rms(diffsolve.sample(gauss, noise, solver="rk4", nfe=4 * k, schedule="log-snr", s_min=s1, s_max=s0,
                                 final="s_min").samples, exact) for k in steps]
    assert abs(slope(steps, errs) - 4) < 0.3, errs
    ref = diffsolve.sample(gauss, noise, solver="rk4", nfe=REF_NFE, schedule="log-snr", s_min=s1, s_max=s0,
                           final="s_min").samples
    assert rms(ref, exact) < 1e-7  # measured 8e-9
