"""Frechet distance between Gaussian fits of feature sets (Heusel et al. 2017, "GANs trained
by a two time-scale update rule converge to a local Nash equilibrium", eq. (6); the Frechet /
Wasserstein-2 distance of Dowson & Landau 1982):

    d^2 = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2}).

The trace of the matrix square root is computed in float64 in the symmetric form

    Tr (S_1 S_2)^{1/2} = Tr (A S_2 A)^{1/2} = sum_i sqrt(max(ev_i(A S_2 A), 0)),   A = S_1^{1/2},

with both square roots from symmetric eigendecompositions: S_1 S_2 has the same eigenvalues as
the symmetric positive semi-definite A S_2 A, so no complex parts appear and singular
covariances need no ad-hoc diagonal offset.

On MNIST the features are those of the shipped CNN (:mod:`diffsolve.metrics.features`) and the
reference is the shipped statistics of the 10,000 MNIST test images. The value has a positive
bias that falls like 1/n with the number of samples, so always compare it with the floor at the
same n: :func:`frechet_floor` (the distance of n real *training* images to the test set).

Example::

    >>> from diffsolve.data import mnist
    >>> from diffsolve.metrics import frechet_distance, frechet_floor
    >>> x, _ = mnist("valid")
    >>> fd = frechet_distance(x[:2000])
    >>> 0 < fd < 3 * frechet_floor(2000)
    True
"""

from __future__ import annotations

import json
import math
from functools import lru_cache

import torch
from torch import Tensor

from .features import FEATURE_DIM, features, shipped_file

__all__ = ["feature_stats", "frechet_from_stats", "frechet_distance", "reference_stats",
           "frechet_floor", "REFERENCES", "trace_sqrt_product"]

#: shipped reference statistics: name -> file in diffsolve/metrics/weights
REFERENCES = {"mnist-test": "mnist_test_stats.safetensors"}
FLOOR_FILE = "mnist_floor.json"


def feature_stats(feats: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (d,) and unbiased covariance (d, d) of (N, d) features, in float64.

    >>> mu, S = feature_stats(torch.tensor([[0.0, 1.0], [2.0, 3.0]]))
    >>> mu.tolist(), S.tolist()
    ([1.0, 2.0], [[2.0, 2.0], [2.0, 2.0]])
    """
    f = torch.as_tensor(feats).to(torch.float64)
    if f.dim() != 2 or f.shape[0] < 2:
        raise ValueError(f"expected features of shape (N >= 2, d), got {tuple(f.shape)}")
    mu = f.mean(0)
    c = f - mu
    return mu, (c.T @ c) / (f.shape[0] - 1)


def _psd_sqrt(S: Tensor) -> Tensor:
    ev, V = torch.linalg.eigh(S)
    return (V * ev.clamp_min(0).sqrt()) @ V.T


def trace_sqrt_product(S1: Tensor, S2: Tensor) -> float:
    """Tr (S1 S2)^{1/2} for symmetric positive semi-definite S1, S2 (float64, symmetric form).

    >>> trace_sqrt_product(torch.diag(torch.tensor([4.0, 1.0])), torch.diag(torch.tensor([9.0, 0.0])))
    6.0
    """
    S1, S2 = (0.5 * (S + S.T) for S in (S1.to(torch.float64), S2.to(torch.float64)))
    A = _psd_sqrt(S1)
    M = A @ S2 @ A
    return float(torch.linalg.eigvalsh(0.5 * (M + M.T)).clamp_min(0).sqrt().sum())


def frechet_from_stats(mu1: Tensor, S1: Tensor, mu2: Tensor, S2: Tensor) -> float:
    """Frechet distance (squared, as FID reports it) between N(mu1, S1) and N(mu2, S2).

    >>> I = torch.eye(3, dtype=torch.float64)
    >>> frechet_from_stats(torch.zeros(3), I, torch.ones(3), 4 * I)   # 3 + 3 * (2 - 1)^2
    6.0
    """
    mu1, mu2 = (torch.as_tensor(m, dtype=torch.float64) for m in (mu1, mu2))
    S1, S2 = (torch.as_tensor(S, dtype=torch.float64) for S in (S1, S2))
    d = mu1.shape[0]
    if mu2.shape != (d,) or S1.shape != (d, d) or S2.shape != (d, d):
        raise ValueError(f"statistics do not match: mu1 {tuple(mu1.shape)}, S1 {tuple(S1.shape)}, "
                         f"mu2 {tuple(mu2.shape)}, S2 {tuple(S2.shape)}")
    tr = float(torch.trace(S1) + torch.trace(S2)) - 2 * trace_sqrt_product(S1, S2)
    return float((mu1 - mu2).pow(2).sum()) + max(tr, 0.0)


@lru_cache(maxsize=None)
def reference_stats(name: str = "mnist-test") -> tuple[Tensor, Tensor, int]:
    """(mu, Sigma, n) of a shipped reference: ``mnist-test`` (features of the 10,000 MNIST test
    images under the shipped CNN)."""
    if name not in REFERENCES:
        raise ValueError(f"unknown reference {name!r}; accepted: {', '.join(REFERENCES)}")
    from safetensors.torch import load_file

    t = load_file(shipped_file(REFERENCES[name], "reference statistics"))
    return t["mu"], t["sigma"], int(t["n"])


def _as_features(x: Tensor) -> Tensor:
    x = torch.as_tensor(x)
    if x.dim() == 2 and x.shape[1] == FEATURE_DIM:
        return x
    if x.dim() in (3, 4):
        return features(x)
    raise ValueError(f"expected MNIST images (N, 1, 28, 28) / (N, 28, 28) or features (N, {FEATURE_DIM}), "
                     f"got {tuple(x.shape)}")


def frechet_distance(x: Tensor, reference: str | Tensor | tuple[Tensor, Tensor] = "mnist-test") -> float:
    """Frechet distance of MNIST images (or their (N, 128) features) to a reference: the name of
    shipped statistics (``mnist-test``), other images or features, or a (mu, Sigma) pair."""
    mu, S = feature_stats(_as_features(x))
    if isinstance(reference, str):
        mu_r, S_r, _ = reference_stats(reference)
    elif isinstance(reference, tuple):
        mu_r, S_r = reference
    else:
        mu_r, S_r = feature_stats(_as_features(reference))
    return frechet_from_stats(mu, S, mu_r, S_r)


@lru_cache(maxsize=1)
def _floor_table() -> dict:
    with open(shipped_file(FLOOR_FILE, "floor table")) as f:
        return json.load(f)


def frechet_floor(n: int) -> float:
    """The floor of :func:`frechet_distance` against ``mnist-test`` for n samples: the mean
    distance of n real MNIST training images to the test statistics (shipped table, measured by
    scripts/train_feature_net.py; interpolated linearly in 1/n between the measured sizes, as the
    bias of the estimate goes like 1/n).

    >>> frechet_floor(10000) < frechet_floor(1000)
    True
    """
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    table = _floor_table()["fd_train_vs_test"]
    ns = sorted(int(k) for k in table)
    vals = [table[str(k)] for k in ns]
    if n <= ns[0]:
        lo, hi = 0, 1
    elif n >= ns[-1]:
        lo, hi = len(ns) - 2, len(ns) - 1
    else:
        hi = next(i for i, m in enumerate(ns) if m >= n)
        lo = hi - 1
    u, u0, u1 = 1 / n, 1 / ns[lo], 1 / ns[hi]
    v = vals[lo] + (vals[hi] - vals[lo]) * (u - u0) / (u1 - u0)
    return float(max(v, 0.0)) if math.isfinite(v) else float(vals[-1])
