"""Gaussian mixtures whose denoiser, score and every noised marginal are known in closed form.

Each component has a low-rank-plus-isotropic covariance ``C_k = U_k diag(d_k) U_k^T + c_k I``
(``U_k`` with orthonormal columns), so that in canonical space, where ``y = x0 + s eps``,

    p_s(y) = sum_k w_k N(y; mu_k, C_k + s^2 I)
    E[x0 | y] = sum_k r_k(y) [mu_k + C_k (C_k + s^2 I)^{-1} (y - mu_k)]

with responsibilities ``r_k`` from the noised component densities.  Inverses and determinants
use the eigen-structure of ``C_k`` (Woodbury), so cost is O(n r) per component and sample:
cheap even for the 3072-D built-in.

Example::

    >>> import torch
    >>> from diffsolve.models.gmm import builtin
    >>> g = builtin("gmm-2d")
    >>> x0 = g.sample(1000, generator=torch.Generator().manual_seed(0))
    >>> x0.shape
    torch.Size([1000, 2])
    >>> float(g.log_prob(x0[:2], torch.tensor([0.0, 0.0], dtype=torch.float64)).exp().min()) > 0
    True
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor

from ..denoisers import Denoiser, edm_preconditioning, expand_s, prediction_from_x0
from ..tensors import bc
from ..paths import Path, get_path
from .gmm_posterior import GaussianMixturePosterior, mixture_posterior

__all__ = ["GaussianMixture", "builtin", "BUILTINS", "grid_mixture"]


class GaussianMixture(Denoiser):
    """A mixture of Gaussians with low-rank-plus-isotropic covariances (float64).

    Args:
        weights: (K,) mixture weights (normalised here).
        means: (K, n) component means.
        U: (K, n, r) orthonormal columns (r may be 0), or None.
        d: (K, r) non-negative variances along the columns of U.
        c: (K,) positive isotropic variances.
        shape: the data shape (product n); defaults to (n,).
    """

    def __init__(self, weights: Tensor, means: Tensor, c: Tensor, U: Tensor | None = None,
                 d: Tensor | None = None, shape: tuple[int, ...] | None = None, name: str = "gmm"):
        f64 = torch.float64
        self.means = torch.as_tensor(means, dtype=f64)
        K, n = self.means.shape
        w = torch.as_tensor(weights, dtype=f64)
        if w.shape != (K,) or bool((w < 0).any()):
            raise ValueError(f"weights must be ({K},) and non-negative")
        self.weights = w / w.sum()
        self.c = torch.as_tensor(c, dtype=f64).expand(K).clone()
        if bool((self.c <= 0).any()):
            raise ValueError("isotropic variances c must be positive")
        if U is None:
            U, d = torch.zeros(K, n, 0, dtype=f64), torch.zeros(K, 0, dtype=f64)
        self.U = torch.as_tensor(U, dtype=f64)
        self.d = torch.as_tensor(d, dtype=f64)
        if self.U.shape[:2] != (K, n) or self.d.shape != (K, self.U.shape[2]):
            raise ValueError(f"U must be ({K}, {n}, r) and d ({K}, r)")
        self.shape = tuple(shape) if shape is not None else (n,)
        if math.prod(self.shape) != n:
            raise ValueError(f"shape {self.shape} does not have {n} elements")
        self.dim, self.K, self.name = n, K, name
        self.path = None

    # -- basic quantities ------------------------------------------------------------
    def _flat(self, y: Tensor) -> Tensor:
        if tuple(y.shape[1:]) != self.shape:
            raise ValueError(f"expected samples of shape (B, {', '.join(map(str, self.shape))}), got {tuple(y.shape)}")
        return y.reshape(y.shape[0], -1).to(torch.float64)

    def _component_terms(self, yf: Tensor, s: Tensor):
        """Per component: log N(y; mu_k, C_k + s^2 I) (B, K) and the posterior means (B, K, n),
        all components at once (broadcast over k)."""
        n = self.dim
        s2 = s.to(torch.float64) ** 2
        a = self.c[None, :] + s2[:, None]  # (B, K): isotropic variance of the noised component
        v = yf[:, None, :] - self.means[None]  # (B, K, n)
        P = torch.bmm(v.transpose(0, 1), self.U).transpose(0, 1)  # (B, K, r): subspace coordinates
        ad = a[:, :, None] + self.d[None]  # (B, K, r)
        maha = (v * v).sum(2) / a - (P * P * self.d[None] / (a[:, :, None] * ad)).sum(2)
        logdet = (n - self.d.shape[1]) * torch.log(a) + torch.log(ad).sum(2)
        logp = -0.5 * (maha + logdet + n * math.log(2 * math.pi))
        shrink = self.c[None, :] / a  # eigenvalue c/(c+s^2) off the subspace
        gain = (self.d[None] + self.c[None, :, None]) / ad - shrink[:, :, None]
        post = self.means[None] + shrink[:, :, None] * v + torch.bmm((P * gain).transpose(0, 1), self.U.transpose(1, 2)).transpose(0, 1)
        return logp, post

    def joint_log_probs(self, y: Tensor, s: Tensor | float) -> Tensor:
        """(B, K) ``log w_k + log N(y; mu_k, C_k + s^2 I)``: each component's share of the noised
        density, finite even where a responsibility underflows (the exact noisy classifier's logits)."""
        yf = self._flat(y)
        lp, _ = self._component_terms(yf, expand_s(s, yf))
        return lp + torch.log(self.weights)

    def log_prob(self, y: Tensor, s: Tensor | float) -> Tensor:
        """Exact log-density of the canonical noised marginal p_s(y), y = x0 + s eps."""
        return torch.logsumexp(self.joint_log_probs(y, s), 1)

    def log_prob_path(self, x: Tensor, t: Tensor | float, path: Path | str) -> Tensor:
        """Exact log-density of the path marginal p_t(x), x = alpha x0 + sigma eps."""
        path = get_path(path)
        t = expand_s(t, x)
        a = path.alpha(t).to(torch.float64)
        y = x / bc(a, x)
        return self.log_prob(y, path.s(t)) - self.dim * torch.log(a)

    def responsibilities(self, y: Tensor, s: Tensor | float) -> Tensor:
        return torch.softmax(self.joint_log_probs(y, s), 1)

    def denoise(self, y: Tensor, s: Tensor) -> Tensor:  # exact and unconditional: no cond taken
        yf = self._flat(y)
        lp, post = self._component_terms(yf, s)
        r = torch.softmax(lp + torch.log(self.weights), 1)
        out = (r[:, :, None] * post).sum(1)
        return out.reshape(y.shape).to(y.dtype)

    def denoiser(self, y: Tensor, s: Tensor | float) -> Tensor:
        """E[x0 | y] at canonical noise level s (alias of calling the model)."""
        return self(y, s)

    def score(self, y: Tensor, s: Tensor | float) -> Tensor:
        """grad_y log p_s(y) = (D(y, s) - y) / s^2."""
        s = expand_s(s, y)
        return (self(y, s) - y) / bc(s, y) ** 2

    # -- exact data ------------------------------------------------------------------
    def sample(self, num: int, generator: torch.Generator | None = None, return_labels: bool = False):
        """Exact samples of x0 (float64)."""
        k = torch.multinomial(self.weights, num, replacement=True, generator=generator)
        z = torch.randn(num, self.dim, dtype=torch.float64, generator=generator)
        x = self.means[k] + torch.sqrt(self.c[k])[:, None] * z
        r = self.U.shape[2]
        if r:
            zr = torch.randn(num, r, dtype=torch.float64, generator=generator)
            x = x + torch.einsum("bnr,br->bn", self.U[k], zr * torch.sqrt(self.d[k]))
        x = x.reshape(num, *self.shape)
        return (x, k) if return_labels else x

    def mean(self) -> Tensor:
        return (self.weights[:, None] * self.means).sum(0)

    def covariance(self) -> Tensor:
        """Exact covariance of x0 (n x n; use on small n only)."""
        m = self.mean()
        cov = torch.zeros(self.dim, self.dim, dtype=torch.float64)
        for k in range(self.K):
            Ck = (self.U[k] * self.d[k]) @ self.U[k].T + self.c[k] * torch.eye(self.dim, dtype=torch.float64)
            dm = self.means[k] - m
            cov += self.weights[k] * (Ck + torch.outer(dm, dm))
        return cov

    def assign(self, x0: Tensor) -> Tensor:
        """Most likely component of each clean sample (for mode-weight statistics)."""
        return self.responsibilities(x0, 0.0).argmax(1)

    # -- exact networks of each prediction type -------------------------------------
    def network(self, path: Path | str, prediction: str = "eps") -> Callable[..., Tensor]:
        """An exact network f(x, t) of the given prediction type on ``path`` (see
        :mod:`diffsolve.denoisers`), e.g. to test adapters or to stand in for a trained model."""
        path = get_path(path)
        if prediction == "edm":
            sigma_data = 0.5

            def edm_raw(x_in: Tensor, c_noise: Tensor, **cond) -> Tensor:
                s = torch.exp(4 * c_noise)
                c_skip, c_out, c_in, _ = edm_preconditioning(s, sigma_data)
                y = x_in / bc(c_in, x_in)
                return (self(y, s) - bc(c_skip, y) * y) / bc(c_out, y)

            return edm_raw

        def f(x: Tensor, t: Tensor, **cond) -> Tensor:
            t = expand_s(t, x)
            a = bc(path.alpha(t).to(x.dtype), x)
            x0 = self(x / a, path.s(t))
            return prediction_from_x0(prediction, x0, x, t, path)

        return f

    # -- inverse problems --------------------------------------------------------------
    def posterior(self, operator: Any, y: Tensor, sigma_y: float) -> GaussianMixturePosterior:
        """The exact posterior mixture given ONE measurement ``y = A x0 + sigma_y n`` of
        ``operator`` (``sigma_y`` in this mixture's data units; 0: noiseless, the posterior lies
        on the affine set A x = y): a sampleable exact Denoiser with weights, means, factorised
        covariances and log_prob (see :mod:`~diffsolve.models.gmm_posterior`).

        >>> import torch
        >>> from diffsolve.inverse import Denoising
        >>> g = GaussianMixture(torch.ones(1), torch.zeros(1, 2), torch.tensor(1.0))
        >>> post = g.posterior(Denoising((2,)), torch.tensor([2.0, 0.0]), sigma_y=1.0)
        >>> post.mean().tolist(), post.covariance().diagonal().tolist()   # (1 + 1)^-1 = 0.5
        ([1.0, 0.0], [0.5, 0.5])
        """
        return mixture_posterior(self, operator, y, sigma_y)

    def __repr__(self) -> str:
        return f"GaussianMixture(name={self.name!r}, K={self.K}, shape={self.shape})"


def _random_orthonormal(n: int, r: int, g: torch.Generator) -> Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, r, dtype=torch.float64, generator=g))
    return q


def _gmm_2d() -> GaussianMixture:
    K = 8
    ang = torch.arange(K, dtype=torch.float64) * (2 * math.pi / K)
    means = torch.stack([torch.cos(ang), torch.sin(ang)], 1)
    tangent = torch.stack([-torch.sin(ang), torch.cos(ang)], 1)[:, :, None]  # (K, 2, 1)
    weights = torch.tensor([3, 1, 2, 1, 3, 1, 2, 1], dtype=torch.float64)
    d = torch.full((K, 1), 0.15**2, dtype=torch.float64)
    c = torch.full((K,), 0.05**2, dtype=torch.float64)
    return GaussianMixture(weights, means, c, tangent, d, name="gmm-2d")


def _gmm_random(name: str, shape: tuple[int, ...], K: int, r: int, mean_scale: float,
                lowrank_var: float, iso_var: float, seed: int) -> GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    n = math.prod(shape)
    means = mean_scale * torch.randn(K, n, dtype=torch.float64, generator=g)
    U = torch.stack([_random_orthonormal(n, r, g) for _ in range(K)])
    # spread of each component along its subspace: per-coordinate variance ~ lowrank_var
    d = lowrank_var * n / r * (0.5 + torch.rand(K, r, dtype=torch.float64, generator=g))
    weights = 0.5 + torch.rand(K, dtype=torch.float64, generator=g)
    c = torch.full((K,), iso_var, dtype=torch.float64)
    return GaussianMixture(weights, means, c, U, d, shape=shape, name=name)


def grid_mixture(dim: int, spacing: float = 8.0, variance: float = 1.0, weights: str = "equal",
                 seed: int = 0) -> GaussianMixture:
    """MCGdiff's benchmark prior [MCGdiff Sec. 4.1, App. B.3] (Cardoso et al. 2023): 25
    components with means ``(s i, s j, s i, s j, ...)`` in ``dim`` dimensions for i, j in
    {-2, ..., 2} (``s = spacing``, 8 in the paper; the pair repeated, cut to ``dim`` when it is
    odd), covariance ``variance * I`` (unit in the paper), weights ``"equal"`` or ``"chi2"``
    (squared standard normals drawn from ``seed``, normalised: the paper's random weights).
    The paper's measurements (not built here): A of shape (d_y, dim) with d_y in {1, 2, 4}, a
    Gaussian matrix whose singular values are replaced by sorted U(0, 1) draws, and
    sigma_y = U(0, 1) * max(sv).

    >>> g = grid_mixture(8)
    >>> g.K, g.shape, g.means[24].tolist()
    (25, (8,), [16.0, 16.0, 16.0, 16.0, 16.0, 16.0, 16.0, 16.0])
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
        raise ValueError(f"grid_mixture: dim must be an integer >= 2, got {dim!r}")
    if weights not in ("equal", "chi2"):
        raise ValueError(f"grid_mixture: weights={weights!r} is not accepted; accepted: 'equal', 'chi2'")
    ij = torch.cartesian_prod(torch.arange(-2, 3, dtype=torch.float64), torch.arange(-2, 3, dtype=torch.float64))
    means = (float(spacing) * ij).repeat(1, (dim + 1) // 2)[:, :dim]
    if weights == "equal":
        w = torch.ones(25, dtype=torch.float64)
    else:
        w = torch.randn(25, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) ** 2
    return GaussianMixture(w, means, torch.tensor(float(variance), dtype=torch.float64), name=f"grid-{dim}")


BUILTINS: dict[str, Callable[[], GaussianMixture]] = {
    "gmm-2d": _gmm_2d,
    "gmm-64": lambda: _gmm_random("gmm-64", (64,), K=10, r=4, mean_scale=0.5, lowrank_var=0.02, iso_var=0.01, seed=64),
    "gmm-3072": lambda: _gmm_random("gmm-3072", (3, 32, 32), K=5, r=8, mean_scale=0.5, lowrank_var=0.05, iso_var=1e-3, seed=3072),
}


def builtin(name: str) -> GaussianMixture:
    """One of the built-in exact mixtures: ``gmm-2d`` (8 modes on the unit circle),
    ``gmm-64`` (10 components, rank 4 + isotropic), ``gmm-3072`` (5 components of shape
    3x32x32, rank 8 + isotropic)."""
    try:
        return BUILTINS[name]()
    except KeyError:
        raise ValueError(f"unknown exact model {name!r}; accepted: {', '.join(BUILTINS)}") from None
