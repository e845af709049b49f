"""The exact posterior of a Gaussian-mixture prior under a linear-Gaussian measurement.

For ``y = A x0 + sigma_y n`` and a prior ``sum_k w_k N(mu_k, C_k)`` the posterior is a mixture

    C'_k = (C_k^-1 + A^T A / sigma_y^2)^-1,   m'_k = C'_k (C_k^-1 mu_k + A^T y / sigma_y^2),
    w'_k  proportional to  w_k N(y; A mu_k, A C_k A^T + sigma_y^2 I)          [Bishop PRML Eq. 2.116]

computed here without an n x n matrix. In the operator's spectral coordinates ``z = V^T x``
(its SVD ``A = U diag(sv) V^T``, rank r) the measurement is ``y' = (U^T y) / sv = z[:r] + tau n``
with ``tau = sigma_y / sv``: a diagonal observation of the first r coordinates (the part of y
outside the range of A carries no information and the same density under every component).
Each prior component ``C_k = c_k I + U_k diag(d_k) U_k^T`` is the latent model
``x = mu_k + W_k u + sqrt(c_k) e`` with ``W_k = U_k diag(d_k)^(1/2)``, ``u ~ N(0, I_q)``. Given
u, the coordinates are independent; integrating u out gives (in spectral coordinates, on the
observed set O = the first r):

    Delta   = c + tau^2 (on O),  Lambda_u = I + W_O^T Delta^-1 W_O,
    u_bar   = Lambda_u^-1 W_O^T Delta^-1 (y' - mu_O)
    log w'_k = log w_k + log N(y'; mu_O, Delta + W_O W_O^T)                     [Woodbury]
    g       = tau^2 / Delta on O, 1 elsewhere;  b = c g
    m'_k    = mu + g (W u_bar) + (1 - g) (y' - mu) on O
    C'_k    = diag(b) + L L^T,  L = diag(g) W Lambda_u^(-1/2)

so every posterior component is "diagonal plus rank q" in the spectral basis. This holds for
sigma_y = 0 too (tau = 0: the posterior lies on the affine set A x = y; b = 0 and L = 0 there,
the weights are the prior components' densities of A x0 at y), so noiseless measurements need
no special case. Its canonical denoiser ``D(y, s) = E[x0 | x0 + s eps = y]`` is exact, with the
same algebra at every level (Woodbury with the diagonal ``b + s^2``).

Cost: one ``Vt`` per prior column and O(K n q^2) to build; per denoiser call one ``Vt``, one
``V`` and O(K n q) per sample. With the structured operators (masks, pooling, blur) the 3072-D
built-in is cheap. Operators without an SVD fall back to the dense matrix's SVD, refused above
:data:`MAX_DENSE` entries of x0.

    >>> import torch
    >>> from diffsolve.models.gmm import GaussianMixture
    >>> from diffsolve.inverse import Inpainting
    >>> prior = GaussianMixture(torch.tensor([0.5, 0.5]), torch.tensor([[-1.0, 0.0], [1.0, 0.0]]), torch.tensor(1.0))
    >>> post = prior.posterior(Inpainting(torch.tensor([1, 0])), torch.tensor([1.0]), sigma_y=1.0)
    >>> [round(v, 4) for v in post.weights.tolist()]         # w' prop. to N(1; +-1, 1 + 1)
    [0.2689, 0.7311]
    >>> post.mean().round(decimals=4).tolist()                # E[x0 | y]
    [0.7311, 0.0]
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor

from ..checks import check_number
from ..denoisers import Denoiser

__all__ = ["GaussianMixturePosterior", "mixture_posterior", "MAX_DENSE"]

F64 = torch.float64
#: the largest data size for operators without an SVD (their dense matrix is decomposed)
MAX_DENSE = 2048
#: batch rows x components x dimensions per chunk of a denoiser call (bounds the memory)
_CHUNK = 1 << 22


class GaussianMixturePosterior(Denoiser):
    """A Gaussian mixture whose components are ``N(m_k, diag(b_k) + L_k L_k^T)`` in the spectral
    coordinates ``z = Vt(x)`` of an orthogonal basis (float64). Built by :func:`mixture_posterior`.

    Attributes: ``weights`` (K,), ``log_weights`` (K,), ``means`` (K, n) in data space (flattened),
    the factorised covariances ``diag`` (K, n) and ``factors`` (K, n, q) in spectral coordinates
    with the basis functions ``Vt``/``V``, ``shape`` (the data shape), ``sigma_y``.
    """

    def __init__(self, log_weights: Tensor, spectral_means: Tensor, diag: Tensor, factors: Tensor,
                 Vt: Callable[[Tensor], Tensor], V: Callable[[Tensor], Tensor], shape: tuple[int, ...],
                 sigma_y: float = 0.0, name: str = "gmm-posterior"):
        self.log_weights = log_weights - torch.logsumexp(log_weights, 0)
        self.weights = self.log_weights.exp()
        self.spectral_means, self.diag, self.factors = spectral_means, diag, factors
        self.Vt, self.V, self.shape = Vt, V, tuple(shape)
        self.K, self.dim = spectral_means.shape
        self.sigma_y, self.name, self.path = float(sigma_y), name, None

    # -- spectral coordinates ----------------------------------------------------------
    def _to_spec(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"expected samples of shape (B, {', '.join(map(str, self.shape))}), got {tuple(x.shape)}")
        return self.Vt(x.to(F64))

    def _from_spec(self, z: Tensor) -> Tensor:
        return self.V(z).reshape(z.shape[0], *self.shape)

    @property
    def means(self) -> Tensor:
        """(K, n) component means in data space (flattened, as :class:`GaussianMixture`)."""
        return self._from_spec(self.spectral_means).reshape(self.K, -1)

    def _terms(self, z: Tensor, s2: Tensor) -> tuple[Tensor, Tensor]:
        """log N(z; m_k, C'_k + s^2 I) (B, K) and (C'_k + s^2 I)^-1 (z - m_k) (B, K, n) for z (B, n)
        and levels s2 (B,) [Woodbury, matrix determinant lemma]. Coordinates of zero variance
        (sigma_y = 0 and s = 0) are dropped: the density on the affine set."""
        L, q = self.factors, self.factors.shape[2]
        levels, inv = torch.unique(s2, return_inverse=True)
        a_u = self.diag[None] + levels[:, None, None]  # (u, K, n)
        free = a_u > 0
        a_u = torch.where(free, a_u, torch.ones_like(a_u))
        v = z[:, None, :] - self.spectral_means[None]
        a, free_b = a_u[inv], free[inv]
        v = torch.where(free_b, v, torch.zeros_like(v))
        va = v / a
        maha = (v * va).sum(2)
        logdet = torch.log(a).sum(2)
        prec_v = va
        if q:
            M = torch.eye(q, dtype=F64) + torch.einsum("knq,ukn,knp->ukqp", L, 1.0 / a_u, L)
            R = torch.linalg.cholesky(M)  # (u, K, q, q)
            logdet = logdet + 2 * torch.log(torch.diagonal(R, dim1=-2, dim2=-1)).sum(-1)[inv]
            P = torch.einsum("bkn,knq->bkq", va, L)
            sol = torch.cholesky_solve(P[..., None], R[inv])[..., 0]
            maha = maha - (P * sol).sum(2)
            prec_v = va - torch.einsum("knq,bkq->bkn", L, sol) / a
        n_free = free_b.sum(2).to(F64)
        return -0.5 * (maha + logdet + n_free * math.log(2 * math.pi)), prec_v

    def _chunks(self, n_rows: int) -> range:
        return range(0, n_rows, max(1, _CHUNK // max(1, self.K * self.dim)))

    def _levels(self, s: Tensor | float, n_rows: int) -> Tensor:
        s = torch.as_tensor(s, dtype=F64).reshape(-1).cpu()
        return (s.expand(n_rows) if s.numel() == 1 else s) ** 2

    # -- densities -----------------------------------------------------------------------
    def log_prob(self, x: Tensor, s: Tensor | float = 0.0) -> Tensor:
        """log density of x0 (s = 0) or of its canonical noising x0 + s eps. For sigma_y = 0 and
        s = 0 it is the density on the affine set A x = y (Lebesgue measure there)."""
        z, s2 = self._to_spec(x), self._levels(s, x.shape[0])
        c = self._chunks(len(z)).step
        return torch.cat([torch.logsumexp(self._terms(z[i:i + c], s2[i:i + c])[0] + self.log_weights, 1)
                          for i in self._chunks(len(z))])

    def responsibilities(self, y: Tensor, s: Tensor | float) -> Tensor:
        """p(component k | x0 + s eps = y), (B, K)."""
        z = self._to_spec(y)
        return torch.softmax(self._terms(z, self._levels(s, y.shape[0]))[0] + self.log_weights, 1)

    # -- the canonical denoiser ------------------------------------------------------------
    def denoise(self, y: Tensor, s: Tensor, **cond: Any) -> Tensor:
        """E[x0 | x0 + s eps = y] = y - s^2 sum_k r_k (C'_k + s^2 I)^-1 (y - m'_k)   [Tweedie];
        rows with s = 0 are returned as they are (D(y, 0) = y)."""
        s2 = self._levels(s, y.shape[0])
        live = s2 > 0
        out = y.clone()
        if not bool(live.any()):
            return out
        z, s2 = self._to_spec(y[live.to(y.device)]), s2[live]
        step = self._chunks(len(z)).step
        for i in self._chunks(len(z)):
            lp, prec_v = self._terms(z[i:i + step], s2[i:i + step])
            r = torch.softmax(lp + self.log_weights, 1)
            z[i:i + step] -= s2[i:i + step, None] * (r[:, :, None] * prec_v).sum(1)
        out[live.to(y.device)] = self._from_spec(z).to(y.dtype)
        return out

    def score(self, y: Tensor, s: Tensor | float) -> Tensor:
        """grad_y log p_s(y | measurement) = (D(y, s) - y) / s^2 (s > 0)."""
        s = torch.as_tensor(s, dtype=y.dtype).reshape(-1, *([1] * (y.ndim - 1)))
        return (self(y, s.reshape(-1) if s.numel() > 1 else float(s)) - y) / s**2

    # -- exact samples and moments -----------------------------------------------------------
    def sample(self, num: int, generator: torch.Generator | None = None, return_labels: bool = False):
        """Exact posterior samples of x0 (float64), (num, *shape)."""
        k = torch.multinomial(self.weights, num, replacement=True, generator=generator)
        z = self.spectral_means[k] + self.diag[k].sqrt() * torch.randn(num, self.dim, dtype=F64, generator=generator)
        q = self.factors.shape[2]
        if q:
            z = z + torch.einsum("bnq,bq->bn", self.factors[k], torch.randn(num, q, dtype=F64, generator=generator))
        x = self._from_spec(z)
        return (x, k) if return_labels else x

    def mean(self) -> Tensor:
        """E[x0 | y], (n,) flattened."""
        return (self.weights[:, None] * self.means).sum(0)

    def _basis(self) -> Tensor:
        """The dense basis: row i is V e_i in data space (n, n)."""
        self._check_dense()
        return self.V(torch.eye(self.dim, dtype=F64)).reshape(self.dim, self.dim)

    def _check_dense(self) -> None:
        if self.dim > MAX_DENSE:
            raise ValueError(f"dense covariances of {self.dim}-D data are not formed (at most {MAX_DENSE}); "
                             "use the factorised form (diag, factors, Vt, V)")

    def component_covariances(self) -> Tensor:
        """(K, n, n) dense C'_k = V (diag(b_k) + L_k L_k^T) V^T (n <= MAX_DENSE)."""
        B = self._basis()
        inner = torch.diag_embed(self.diag) + self.factors @ self.factors.transpose(1, 2)
        return B.T[None] @ inner @ B[None]

    def covariance(self) -> Tensor:
        """Cov[x0 | y] of the mixture, (n, n) (n <= MAX_DENSE)."""
        dm = self.means - self.mean()
        C = self.component_covariances()
        return (self.weights[:, None, None] * (C + dm[:, :, None] * dm[:, None, :])).sum(0)

    def assign(self, x0: Tensor) -> Tensor:
        """Most likely component of each clean sample."""
        return self.responsibilities(x0, 1e-12 if self.sigma_y == 0 else 0.0).argmax(1)

    def __repr__(self) -> str:
        return f"GaussianMixturePosterior(name={self.name!r}, K={self.K}, shape={self.shape}, sigma_y={self.sigma_y:g})"


# -- building it ------------------------------------------------------------------------------

def _spectral_basis(operator: Any, y: Tensor):
    """(sv, U^T y, Vt, V) of the operator: its own SVD, else the dense matrix's."""
    svd = operator.svd() if callable(getattr(operator, "svd", None)) else None
    if svd is not None:
        return svd.sv.to(F64), svd.Ut(y)[0].to(F64), svd.Vt, svd.V
    n = math.prod(operator.in_shape)
    if n > MAX_DENSE:
        raise ValueError(f"the operator {getattr(operator, 'name', type(operator).__name__)} has no SVD and the data "
                         f"has {n} entries (dense fallback at most {MAX_DENSE}); give the operator an svd()")
    Uf, S, Vh = torch.linalg.svd(operator.matrix(F64), full_matrices=True)
    r = int((S > 1e-10 * S.max()).sum()) if S.numel() else 0
    shape = tuple(operator.in_shape)
    return (S[:r], (y.reshape(1, -1) @ Uf[:, :r])[0], lambda x: x.reshape(x.shape[0], -1).to(F64) @ Vh.T,
            lambda z: (z @ Vh).reshape(z.shape[0], *shape))


def mixture_posterior(prior: Any, operator: Any, y: Tensor, sigma_y: float) -> GaussianMixturePosterior:
    """The exact posterior of the mixture ``prior`` (a :class:`GaussianMixture`) given ONE
    measurement ``y = A x0 + sigma_y n`` (``y`` of shape ``out_shape`` or (1, *out_shape);
    ``sigma_y`` in the prior's data units, 0 for a noiseless measurement). ``operator`` is any
    object with ``in_shape``/``out_shape`` and ``svd()`` (or ``matrix()`` when it has no SVD,
    data of at most :data:`MAX_DENSE` entries). It is exact for A as its SVD describes it (a
    blur's singular values below its ``sv_rtol`` count as zero: those directions are taken as
    unmeasured). See the module docstring for the algebra."""
    sigma_y = check_number("posterior", "sigma_y", sigma_y, 0)
    out_shape, in_shape = tuple(operator.out_shape), tuple(operator.in_shape)
    if tuple(in_shape) != tuple(prior.shape):
        raise ValueError(f"the operator acts on {in_shape}, the prior's data has shape {tuple(prior.shape)}")
    y = torch.as_tensor(y, dtype=F64)
    if tuple(y.shape) == out_shape:
        y = y[None]
    if tuple(y.shape) != (1, *out_shape):
        raise ValueError(f"y must be one measurement of shape {out_shape} or (1, {', '.join(map(str, out_shape))}), "
                         f"got {tuple(y.shape)}")
    if not bool(torch.isfinite(y).all()):
        raise ValueError("y contains NaN or inf")
    sv, yt, Vt, V = _spectral_basis(operator, y)
    K, n, r = prior.K, prior.dim, int(sv.numel())
    shape = tuple(prior.shape)
    mu = Vt(prior.means.reshape(K, *shape)).to(F64)  # (K, n) spectral means
    q = prior.U.shape[2]
    W = torch.zeros(K, n, 0, dtype=F64)
    if q:
        cols = prior.U.transpose(1, 2).reshape(K * q, *shape)
        W = Vt(cols).to(F64).reshape(K, q, n).transpose(1, 2) * prior.d.clamp(min=0).sqrt()[:, None, :]
    c = prior.c[:, None]
    yp, tau2 = yt / sv, (sigma_y / sv) ** 2  # y' = z[:r] + tau n
    delta = c + tau2[None]  # (K, r)
    W_O, resid = W[:, :r], yp[None] - mu[:, :r]
    Lam = torch.eye(q, dtype=F64) + W_O.transpose(1, 2) @ (W_O / delta[:, :, None])
    R = torch.linalg.cholesky(Lam)
    t = (W_O.transpose(1, 2) @ (resid / delta)[:, :, None])[..., 0]  # (K, q)
    u_bar = torch.cholesky_solve(t[..., None], R)[..., 0]
    # [Woodbury] log N(y'; mu_O, Delta + W_O W_O^T), constants common to all k dropped
    maha = (resid * resid / delta).sum(1) - (t * u_bar).sum(1)
    logdet = torch.log(delta).sum(1) + 2 * torch.log(torch.diagonal(R, dim1=-2, dim2=-1)).sum(-1)
    log_w = torch.log(prior.weights) - 0.5 * (maha + logdet)
    g = torch.ones(K, n, dtype=F64)
    g[:, :r] = tau2[None] / delta
    m = mu + g * (W @ u_bar[:, :, None])[..., 0]
    m[:, :r] = m[:, :r] + (1 - g[:, :r]) * resid
    # L = diag(g) W Lambda^(-1/2), with Lambda = R R^T: L^T = R^-1 (g W)^T
    L = torch.linalg.solve_triangular(R, (g[:, :, None] * W).transpose(1, 2), upper=False).transpose(1, 2)
    return GaussianMixturePosterior(log_w, m, c * g, L, Vt, V, shape, sigma_y,
                                    name=f"{getattr(prior, 'name', 'gmm')}-posterior")
