"""Shared helper for convergence-order tests: error against a high-accuracy reference from the
same starting noise, and the slope of a log-log least-squares fit of error against NFE."""

from __future__ import annotations

import math
from functools import lru_cache

import torch

import diffsolve
from diffsolve.models.gmm import builtin

#: Reference: RK4 in lambda with many steps. Its own error is checked in test_reference.
REF_NFE = 4 * 400


@lru_cache(maxsize=None)
def setup(model: str = "gmm-64", path: str = "ddpm-linear", batch: int = 16, seed: int = 0):
    g = builtin(model)
    noise = torch.randn(batch, *g.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return g, noise


@lru_cache(maxsize=None)
def reference(model: str, path: str, schedule: str, final: str, s_min: float | None = None):
    g, noise = setup(model, path)
    kw = schedule_kwargs(path, schedule, final, s_min)
    # rk4 from s_max to s_min on a fine log-SNR grid: same endpoints as the solvers' grids
    res = diffsolve.sample(g, noise, solver="rk4", nfe=REF_NFE, schedule="log-snr", **kw)
    return res.samples


def schedule_kwargs(path: str, schedule: str, final: str, s_min: float | None = None) -> dict:
    kw = dict(path=path, final=final)
    if s_min is not None:
        kw["s_min"] = s_min
    return kw


def rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).mean().sqrt())


def errors(solver: str, nfes, *, model="gmm-64", path="ddpm-linear", schedule="log-snr", final="s_min",
           s_min: float | None = None, **options) -> list[float]:
    g, noise = setup(model, path)
    ref = reference(model, path, "log-snr", final, s_min)
    kw = schedule_kwargs(path, schedule, final, s_min)
    return [rms(diffsolve.sample(g, noise, solver=solver, nfe=n, schedule=schedule, **kw, **options).samples, ref)
            for n in nfes]


def slope(nfes, errs) -> float:
    """-d log(err) / d log(nfe) by least squares."""
    xs = [math.log(n) for n in nfes]
    ys = [math.log(e) for e in errs]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return -sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
