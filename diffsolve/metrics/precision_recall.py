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

__all__ = ["knn_radii", "manifold_coverage", "precision_recall", "density_coverage"]


def _check(x: Tensor, name: str) -> Tensor:
    x = torch.as_tensor(x)
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (N, d) feature matrix (use metrics.features on "
                         f"images first), got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains non-finite values")
    return x.to(torch.float64)


def knn_radii(x: Tensor, k: int = 3, chunk: int = 1024) -> Tensor:
    """Distance of each row of x to its k-th nearest neighbour among the other rows (N,).

    >>> knn_radii(torch.tensor([[0.0], [1.0], [3.0]]), k=1).tolist()
    [1.0, 1.0, 2.0]
    """
    x = _check(x, "x")
    if not 1 <= k < x.shape[0]:
        raise ValueError(f"k must be in [1, {x.shape[0] - 1}] for {x.shape[0]} points, got {k}")
    out = []
    for i in range(0, x.shape[0], chunk):
        d = torch.cdist(x[i:i + chunk], x)
        # the smallest distance is the point itself (0); the (k+1)-th smallest is the k-th neighbour
        out.append(d.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(out)


def _ball_hits(queries: Tensor, support: Tensor, radii: Tensor, chunk: int = 1024) -> tuple[Tensor, Tensor]:
    """For the balls B(support_j, radii_j): how many balls contain each query (Nq,), and whether
    each ball contains at least one query (Ns,)."""
    q, s = _check(queries, "queries"), _check(support, "support")
    if q.shape[1] != s.shape[1]:
        raise ValueError(f"feature dimensions differ: {q.shape[1]} vs {s.shape[1]}")
    radii = torch.as_tensor(radii, dtype=torch.float64)
    counts, hit = [], torch.zeros(s.shape[0], dtype=torch.bool)
    for i in range(0, q.shape[0], chunk):
        inside = torch.cdist(q[i:i + chunk], s) <= radii[None, :]
        counts.append(inside.sum(1))
        hit |= inside.any(0)
    return torch.cat(counts), hit


def manifold_coverage(queries: Tensor, support: Tensor, radii: Tensor) -> float:
    """Fraction of query points inside the union of balls B(support_j, radii_j) (eq. 1)."""
    return float((_ball_hits(queries, support, radii)[0] > 0).double().mean())


def precision_recall(real_feats: Tensor, fake_feats: Tensor, k: int = 3) -> dict[str, float]:
    """Improved precision and recall (eq. 2) of generated features against real ones, with the
    k-NN manifold estimate. Returns ``{"precision": p, "recall": r}``.

    Precision is sensitive to outliers among the real features: a few ambiguous real images
    have large k-NN balls that can cover a whole cluster of wrong samples (on MNIST, colour-
    inverted digits reach precision ~0.6 while their recall is 0). :func:`density_coverage`
    is the remedy Naeem et al. (2020) proposed; read precision together with it and the
    Frechet distance."""
    real, fake = _check(real_feats, "real_feats"), _check(fake_feats, "fake_feats")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature dimensions differ: real {real.shape[1]} vs fake {fake.shape[1]}")
    precision = manifold_coverage(fake, real, knn_radii(real, k))
    recall = manifold_coverage(real, fake, knn_radii(fake, k))
    return {"precision": precision, "recall": recall}


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
    real, fake = _check(real_feats, "real_feats"), _check(fake_feats, "fake_feats")
    counts, hit = _ball_hits(fake, real, knn_radii(real, k))
    return {"density": float(counts.sum()) / (k * fake.shape[0]), "coverage": float(hit.double().mean())}
