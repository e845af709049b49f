"""Distances between a sample set and an exact model (a :class:`~diffsolve.models.gmm.GaussianMixture`),
for benchmarks where the true distribution is known.

* :func:`sliced_w2` -- sliced Wasserstein-2 distance (Rabin, Peyre, Delon and Bernot 2011;
  Bonneel et al. 2015): ``SW2(a, b) = (E_theta W2^2(theta#a, theta#b))^{1/2}`` over uniform unit
  directions theta, with the exact 1-D W2 between the empirical projections (quantile functions,
  any two sample sizes), estimated with ``n_proj`` seeded directions.
* :func:`mmd` -- unbiased squared maximum mean discrepancy (Gretton et al. 2012, JMLR, Lemma 6)
  with Gaussian kernels ``k(x, y) = exp(-||x - y||^2 / (2 h^2))``; default bandwidth rule: the
  mean of the kernels with h = h_med * (1, 1/2, 1/4, 1/8), h_med the median pairwise Euclidean
  distance within the *reference* set ``b`` (so every sampler compared with the same reference
  gets the same kernel).
* :func:`mode_tv` -- total-variation distance between the mode frequencies of samples (each
  assigned to its most likely component by ``GaussianMixture.assign``) and the mixture weights;
  :func:`mode_tv_floor` is its exact expectation for n exact samples.
* :func:`rms_error` -- root-mean-square difference of two equal-shape tensors (e.g. a solver's
  samples and a reference solution from the same noise).
* :func:`compare_to_exact` -- all of the above against fresh exact samples, with floors.

Example::

    >>> import torch
    >>> from diffsolve.models.gmm import builtin
    >>> g = builtin("gmm-2d")
    >>> x = g.sample(1000, generator=torch.Generator().manual_seed(0))
    >>> ref = g.sample(1000, generator=torch.Generator().manual_seed(1))
    >>> sliced_w2(x, ref) < 0.05 and abs(mmd(x, ref)) < 0.01 and mode_tv(g, x) < 0.05
    True
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["MULTISCALE", "sliced_w2", "mmd", "median_bandwidth", "mode_tv", "mode_tv_floor", "rms_error", "compare_to_exact"]


def _flat(x: Tensor, name: str) -> Tensor:
    x = torch.as_tensor(x)
    if x.dim() < 1 or x.shape[0] < 1:
        raise ValueError(f"{name} must be a non-empty batch (N, ...), got shape {tuple(x.shape)}")
    x = x.reshape(x.shape[0], -1).to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains non-finite values")
    return x


def _pair(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    a, b = _flat(a, "a"), _flat(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b have different dimensions: {a.shape[1]} vs {b.shape[1]}")
    return a, b


def _w2sq_1d_sorted(pa: Tensor, pb: Tensor) -> Tensor:
    """Exact squared W2 between empirical 1-D distributions given sorted columns (Na, P), (Nb, P):
    the integral over q in (0, 1) of (F_a^{-1}(q) - F_b^{-1}(q))^2 of the step quantile functions."""
    na, nb = pa.shape[0], pb.shape[0]
    q = torch.unique(torch.cat([torch.arange(1, na + 1, dtype=torch.float64) / na,
                                torch.arange(1, nb + 1, dtype=torch.float64) / nb]))
    width = torch.diff(q, prepend=q.new_zeros(1))
    mid = q - width / 2
    ia = (mid * na).floor().long().clamp(0, na - 1)
    ib = (mid * nb).floor().long().clamp(0, nb - 1)
    return (width[:, None] * (pa[ia] - pb[ib]) ** 2).sum(0)


def sliced_w2(a: Tensor, b: Tensor, n_proj: int = 256, seed: int = 0) -> float:
    """Sliced Wasserstein-2 distance between two sample sets (N, ...) (float64).

    >>> sliced_w2(torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [0.5], [1.0]])) ** 2  # 1/12 in 1-D
    0.08333333333333333
    """
    a, b = _pair(a, b)
    if n_proj < 1:
        raise ValueError(f"n_proj must be >= 1, got {n_proj}")
    theta = torch.randn(n_proj, a.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    theta = theta / theta.norm(dim=1, keepdim=True)
    pa, pb = (a @ theta.T).sort(0).values, (b @ theta.T).sort(0).values
    return float(_w2sq_1d_sorted(pa, pb).mean().sqrt())


def median_bandwidth(x: Tensor, max_points: int = 2000) -> float:
    """Median pairwise Euclidean distance of x (N, ...), on at most ``max_points`` evenly spaced rows.

    >>> median_bandwidth(torch.tensor([[0.0], [1.0], [3.0]]))
    2.0
    """
    x = _flat(x, "x")
    if x.shape[0] < 2:
        raise ValueError("the median bandwidth needs at least 2 points")
    if x.shape[0] > max_points:
        x = x[torch.linspace(0, x.shape[0] - 1, max_points).long()]
    d = torch.cdist(x, x)
    iu = torch.triu_indices(x.shape[0], x.shape[0], 1)
    return float(d[iu[0], iu[1]].median())


#: the default kernel: Gaussians of widths median * (1, 1/2, 1/4, 1/8), averaged
MULTISCALE = (1.0, 0.5, 0.25, 0.125)


def _kernel_sum(x: Tensor, y: Tensor, widths: tuple[float, ...], chunk: int = 2048) -> float:
    """sum_ij k(x_i, y_j) for the mean of Gaussian kernels of the given widths."""
    total = 0.0
    for i in range(0, x.shape[0], chunk):
        d2 = torch.cdist(x[i:i + chunk], y).pow(2)
        total += sum(float(torch.exp(-d2 / (2 * h * h)).sum()) for h in widths) / len(widths)
    return total


def mmd(a: Tensor, b: Tensor, bandwidth: float | Sequence[float] | str = "median-multiscale") -> float:
    """Unbiased estimate of the squared MMD between samples a (N, ...) and reference samples b
    (M, ...). The kernel is Gaussian, k(x, y) = exp(-||x - y||^2 / (2 h^2)), or the mean of several
    such kernels; ``bandwidth`` is h (a float), several widths (a sequence), or a rule computed
    from the reference set b alone, so that every sample set compared with the same reference
    gets the same kernel:

    * ``"median-multiscale"`` (default): widths h_med * (1, 1/2, 1/4, 1/8), h_med the median
      pairwise distance in b. The median alone is blind to the spread within the modes of a
      multimodal distribution (it sees the mixture's scale); the smaller widths see it.
    * ``"median"``: the single width h_med (the classic median heuristic).

    The estimate can be slightly negative when the distributions agree.

    >>> x, y = torch.zeros(3, 1), torch.ones(4, 1)
    >>> round(mmd(x, y, bandwidth=1.0), 6) == round(2 - 2 * math.exp(-0.5), 6)
    True
    """
    a, b = _pair(a, b)
    m, n = a.shape[0], b.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"the unbiased MMD needs at least 2 samples in each set, got {m} and {n}")
    if isinstance(bandwidth, str):
        rules = {"median-multiscale": MULTISCALE, "median": (1.0,)}
        if bandwidth not in rules:
            raise ValueError(f"unknown bandwidth rule {bandwidth!r}; accepted: a positive float, a sequence "
                             f"of them, {', '.join(map(repr, rules))}")
        h = median_bandwidth(b)
        widths = tuple(h * f for f in rules[bandwidth])
    elif isinstance(bandwidth, (int, float)):
        widths = (float(bandwidth),)
    else:
        widths = tuple(float(h) for h in bandwidth)
    if not widths or not all(h > 0 for h in widths):
        raise ValueError(f"bandwidths must be positive, got {widths}")
    # the diagonal terms k(x_i, x_i) = 1 are removed from the within-set sums
    kaa = (_kernel_sum(a, a, widths) - m) / (m * (m - 1))
    kbb = (_kernel_sum(b, b, widths) - n) / (n * (n - 1))
    kab = _kernel_sum(a, b, widths) / (m * n)
    return kaa + kbb - 2 * kab


def mode_tv(gmm, samples: Tensor) -> float:
    """Total variation 1/2 sum_k |f_k - w_k| between the fraction f_k of samples assigned to
    component k (``gmm.assign``) and the mixture weights w_k.

    >>> from diffsolve.models.gmm import builtin
    >>> g = builtin("gmm-2d")
    >>> round(mode_tv(g, g.means[:1].repeat(10, 1)), 12) == round(1 - 3 / 14, 12)  # all on mode 0
    True
    """
    samples = torch.as_tensor(samples)
    if samples.shape[0] == 0:
        raise ValueError("mode_tv needs at least one sample")
    freq = torch.bincount(gmm.assign(samples), minlength=gmm.K).to(torch.float64) / samples.shape[0]
    return float(0.5 * (freq - gmm.weights).abs().sum())


def mode_tv_floor(weights: Tensor, n: int) -> float:
    """Expected :func:`mode_tv` of n exact samples: 1/2 sum_k E|X_k/n - w_k|, X_k ~ Binomial(n, w_k)
    (exact sum over the binomial law).

    >>> round(mode_tv_floor(torch.tensor([0.5, 0.5]), 2), 6)  # X = 0, 1, 2 w.p. 1/4, 1/2, 1/4
    0.25
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    w = torch.as_tensor(weights, dtype=torch.float64)
    w = w / w.sum()
    x = torch.arange(n + 1, dtype=torch.float64)
    logc = torch.lgamma(torch.tensor(n + 1.0, dtype=torch.float64)) - torch.lgamma(x + 1) - torch.lgamma(n - x + 1)
    total = 0.0
    for p in w.tolist():
        if p <= 0.0 or p >= 1.0:
            continue
        pmf = torch.exp(logc + x * math.log(p) + (n - x) * math.log1p(-p))
        total += float((pmf * (x / n - p).abs()).sum())
    return 0.5 * total


def rms_error(a: Tensor, b: Tensor) -> float:
    """sqrt(mean((a - b)^2)) over all entries of two equal-shape tensors, in float64.

    >>> rms_error(torch.zeros(2, 2), torch.tensor([[1.0, -1.0], [1.0, -1.0]]))
    1.0
    """
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return float((a.to(torch.float64) - b.to(torch.float64)).pow(2).mean().sqrt())


def compare_to_exact(gmm, samples: Tensor, seed: int = 0, n_proj: int = 256) -> dict[str, float]:
    """Sliced W2, MMD^2 and mode TV of ``samples`` against fresh exact samples of the same size,
    with their floors (the same metrics between two independent exact sets; for mode TV the
    exact expectation). Exact sets use seeds ``seed`` and ``seed + 1``.

    >>> from diffsolve.models.gmm import builtin
    >>> g = builtin("gmm-2d")
    >>> r = compare_to_exact(g, g.sample(500, torch.Generator().manual_seed(5)) * 1.3)
    >>> r["sliced_w2"] > 3 * r["sliced_w2_floor"]
    True
    """
    samples = torch.as_tensor(samples)
    n = samples.shape[0]
    ref = gmm.sample(n, generator=torch.Generator().manual_seed(seed))
    ref2 = gmm.sample(n, generator=torch.Generator().manual_seed(seed + 1))
    return {
        "n": n,
        "sliced_w2": sliced_w2(samples, ref, n_proj, seed), "sliced_w2_floor": sliced_w2(ref2, ref, n_proj, seed),
        "mmd": mmd(samples, ref), "mmd_floor": mmd(ref2, ref),
        "mode_tv": mode_tv(gmm, samples), "mode_tv_floor": mode_tv_floor(gmm.weights, n),
    }
