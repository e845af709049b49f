"""Improved precision and recall by k-nearest-neighbour manifolds (Kynkaanniemi, Karras, Laine,
Lehtinen and Aila 2019, "Improved precision and recall metric for assessing generative models",
Sec. 2, eqs. (1)-(2)).

Each set of feature vectors Phi estimates its manifold as the union of balls centred at its
points, the radius of the ball around phi being the distance to its k-th nearest neighbour in
Phi (itself excluded):

    f(phi, Phi) = 1  if ||phi - phi'|| <= NND_k(phi') for some phi' in Phi, else 0      (eq. 1)
    precision = mean_{phi_g in Phi_g} f(phi_g, Phi_r),  recall = mean_{phi_r in Phi_r} f(phi_r, Phi_g)   (eq. 2)

Precision is the fraction of generated samples that fall on the real manifold (quality);
recall the fraction of real samples covered by the generated manifold (diversity). The paper
uses k = 3 and equal-size sets; the estimate depends on both, so compare runs at equal sizes.
Density and coverage (Naeem et al. 2020) reuse the same balls and are robust to real outliers.

Example::

    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> real = torch.randn(500, 8, generator=g)
    >>> pr = precision_recall(real, torch.randn(500, 8, generator=g))
    >>> pr["precision"] > 0.8 and pr["recall"] > 0.8
    True
    >>> precision_recall(real, torch.randn(500, 8, generator=g) + 10)["precision"]
    0.0
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["knn_radii", "knn_metrics", "precision_recall", "density_coverage"]


def _check(x: Tensor, name: str) -> Tensor:
    x = torch.as_tensor(x)
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (N, d) feature matrix (use metrics.features on "
                         f"images first), got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains non-finite values")
    return x.to(torch.float64)


def knn_radii(x: Tensor, k: int | tuple[int, ...] = 3, chunk: int = 1024) -> Tensor:
    """Distance of each row of x to its k-th nearest neighbour among the other rows: (N,) for one
    k, (len(k), N) for a tuple of k's (one pass).

    >>> knn_radii(torch.tensor([[0.0], [1.0], [3.0]]), k=1).tolist()
    [1.0, 1.0, 2.0]
    """
    x = _check(x, "x")
    ks = (k,) if isinstance(k, int) else tuple(k)
    for kk in ks:
        if not 1 <= kk < x.shape[0]:
            raise ValueError(f"k must be in [1, {x.shape[0] - 1}] for {x.shape[0]} points, got {kk}")
    out = []
    for i in range(0, x.shape[0], chunk):
        d = torch.cdist(x[i:i + chunk], x)
        # the smallest distance is the point itself (0); the (k+1)-th smallest is the k-th neighbour
        out.append(d.topk(max(ks) + 1, dim=1, largest=False).values[:, list(ks)].T)
    r = torch.cat(out, 1)
    return r[0] if isinstance(k, int) else r


def knn_metrics(real_feats: Tensor, fake_feats: Tensor, k: int = 3, k_density: int = 5,
                real_radii: Tensor | None = None, chunk: int = 1024) -> dict[str, float]:
    """Precision and recall (k-NN balls, ``k``) and density and coverage (real balls of
    ``k_density``) from one pass over the real-fake distances. ``real_radii`` (2, N_real) from
    ``knn_radii(real, (k, k_density))`` may be passed to reuse them across calls."""
    real, fake = _check(real_feats, "real_feats"), _check(fake_feats, "fake_feats")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature dimensions differ: real {real.shape[1]} vs fake {fake.shape[1]}")
    r_real = knn_radii(real, (k, k_density)) if real_radii is None else torch.as_tensor(real_radii, dtype=torch.float64)
    if r_real.shape != (2, real.shape[0]):
        raise ValueError(f"real_radii must be (2, {real.shape[0]}), got {tuple(r_real.shape)}")
    r_fake = knn_radii(fake, k)
    on_real, density_hits = 0, 0
    recalled = torch.zeros(real.shape[0], dtype=torch.bool)
    covered = torch.zeros(real.shape[0], dtype=torch.bool)
    for i in range(0, fake.shape[0], chunk):
        d = torch.cdist(fake[i:i + chunk], real)  # (chunk, N_real)
        on_real += int((d <= r_real[0]).any(1).sum())                # eq. (1) for precision
        recalled |= (d <= r_fake[i:i + chunk, None]).any(0)          # eq. (1) for recall
        in_dc = d <= r_real[1]
        density_hits += int(in_dc.sum())
        covered |= in_dc.any(0)
    return {"precision": on_real / fake.shape[0], "recall": float(recalled.double().mean()),
            "density": density_hits / (k_density * fake.shape[0]), "coverage": float(covered.double().mean())}


def precision_recall(real_feats: Tensor, fake_feats: Tensor, k: int = 3) -> dict[str, float]:
    """Improved precision and recall (eq. 2) of generated features against real ones, with the
    k-NN manifold estimate. Returns ``{"precision": p, "recall": r}``.

    Precision is sensitive to outliers among the real features: a few ambiguous real images
    have large k-NN balls that can cover a cluster of wrong samples, and a sampler that
    collapses onto one point inside such a ball gets precision 1. Read it with recall, the
    Frechet distance and :func:`density_coverage` (Naeem et al. 2020's remedy)."""
    m = knn_metrics(real_feats, fake_feats, k=k, k_density=k)
    return {"precision": m["precision"], "recall": m["recall"]}


def density_coverage(real_feats: Tensor, fake_feats: Tensor, k: int = 5) -> dict[str, float]:
    """Density and coverage (Naeem, Oh, Uh, Choi and Yoo 2020, "Reliable fidelity and diversity
    metrics for generative models", eqs. (3)-(4)), built on the real k-NN balls only:

        density  = 1/(k M) sum_j sum_i 1[Y_j in B(X_i, NND_k(X_i))]     (expected 1 for real data)
        coverage = 1/N sum_i 1[exists j: Y_j in B(X_i, NND_k(X_i))]

    for N real features X and M generated features Y (the paper uses k = 5).

    >>> g = torch.Generator().manual_seed(0)
    >>> dc = density_coverage(torch.randn(500, 4, generator=g), torch.randn(500, 4, generator=g))
    >>> 0.8 < dc["density"] < 1.2 and dc["coverage"] > 0.9
    True
    """
    m = knn_metrics(real_feats, fake_feats, k=k, k_density=k)
    return {"density": m["density"], "coverage": m["coverage"]}
