"""Linear measurement operators: y = A x + sigma_y n, n ~ N(0, I).

Every operator maps a batch x of shape (B, *in_shape) to (B, *out_shape) and gives

* ``forward(x)`` (A x) and ``adjoint(y)`` (A^T y);
* ``svd()``: the singular value decomposition A = U diag(sv) V^T as an :class:`SVD` of
  functions (never a matrix where the structure allows: masks, pooling, FFT-diagonal blur),
  or None where the operator has none (methods that need it, DDRM, DDNM, PiGDM, refuse it);
* ``pinv(y)``: the pseudo-inverse A^+ y = V diag(1/sv) U^T y (from the SVD);
* ``measure(x, sigma_y, seeds)``: A x plus seeded Gaussian noise (per-sample seeds, as the
  samplers' noise: a measurement does not change with the batch around it).

Units: ``x`` and ``sigma_y`` are in the prior's own data range (for the shipped image models,
[-1, 1]: a noise of 0.05 in [0, 1] pixel units is ``sigma_y = 0.1`` there; see
:func:`sigma_in_model_units`).

    >>> import torch
    >>> A = LinearOperator(torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64), (3,))
    >>> x = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    >>> A(x).tolist(), A.adjoint(A(x)).tolist()
    ([[3.0]], [[3.0, 3.0, 0.0]])
    >>> A.pinv(A(x)).round(decimals=12).tolist()               # the minimum-norm solution
    [[1.5, 1.5, 0.0]]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from ..checks import check_number
from ..noise import NoiseSource

__all__ = ["Operator", "SVD", "LinearOperator", "sigma_in_model_units"]

#: the NoiseSource step used for measurement noise (apart from every sampler's steps >= -1)
MEASUREMENT_STEP = -2


def sigma_in_model_units(sigma: float, value_range: tuple[float, float], pixel_range: tuple[float, float] = (0.0, 1.0)) -> float:
    """A noise level given in ``pixel_range`` units (the papers' [0, 1]) in the model's
    ``value_range`` units (the shipped image models use [-1, 1]: factor 2).

    >>> sigma_in_model_units(0.05, (-1.0, 1.0))
    0.1
    """
    return float(sigma) * (value_range[1] - value_range[0]) / (pixel_range[1] - pixel_range[0])


@dataclass(frozen=True)
class SVD:
    """A = U diag(sv) V^T given by functions on batches.

    sv: the r non-zero singular values (r <= min(n_in, n_out)), a (r,) float64 tensor.
    Vt: x (B, *in_shape) -> (B, n_in) spectral coordinates; the first r go with ``sv``.
    V: (B, n_in) -> (B, *in_shape), the inverse of Vt (V is orthogonal).
    Ut: y (B, *out_shape) -> (B, r); U: (B, r) -> (B, *out_shape) (on the range of A).
    """

    sv: Tensor
    Vt: Callable[[Tensor], Tensor]
    V: Callable[[Tensor], Tensor]
    Ut: Callable[[Tensor], Tensor]
    U: Callable[[Tensor], Tensor]

    @property
    def rank(self) -> int:
        return int(self.sv.numel())


class Operator:
    """Base class: subclasses set ``in_shape`` / ``out_shape`` and implement ``_forward`` and
    ``_adjoint`` on batches of those shapes (and ``svd`` where the structure allows)."""

    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    name: str = "operator"

    def _forward(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _adjoint(self, y: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check(self, v: Tensor, shape: tuple[int, ...], what: str) -> None:
        if not isinstance(v, Tensor) or tuple(v.shape[1:]) != tuple(shape) or v.ndim != len(shape) + 1:
            got = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
            raise ValueError(f"{self.name}: {what} must have shape (batch, {', '.join(map(str, shape))}), got {got}")

    def forward(self, x: Tensor) -> Tensor:
        """A x for x of shape (B, *in_shape)."""
        self._check(x, self.in_shape, "x")
        return self._forward(x)

    __call__ = forward

    def adjoint(self, y: Tensor) -> Tensor:
        """A^T y for y of shape (B, *out_shape)."""
        self._check(y, self.out_shape, "y")
        return self._adjoint(y)

    def svd(self) -> SVD | None:
        """The SVD of A as functions, or None where the operator has none."""
        return None

    def require_svd(self, method: str) -> SVD:
        """The SVD, or a clear refusal naming the method that needs it."""
        s = self.svd()
        if s is None:
            raise ValueError(f"method {method!r} needs the operator's SVD, which {self.name} does not provide; "
                             f"use a method that needs only forward/adjoint (dps, diffpir, daps, red-diff)")
        return s

    def pinv(self, y: Tensor) -> Tensor:
        """A^+ y = V diag(1/sv) U^T y (the minimum-norm least-squares solution)."""
        self._check(y, self.out_shape, "y")
        s = self.require_svd("pinv")
        z = s.Ut(y) / s.sv.to(y.dtype)
        n_in = math.prod(self.in_shape)
        full = torch.zeros(y.shape[0], n_in, dtype=y.dtype, device=y.device)
        full[:, : s.rank] = z
        return s.V(full)

    def measure(self, x: Tensor, sigma_y: float, seeds: Sequence[int] | None = None) -> Tensor:
        """A x + sigma_y n with per-sample seeded noise n (``seeds``: one per row, default 0..B-1).
        ``sigma_y`` is in the data's own units (see the module docstring)."""
        sigma_y = check_number(self.name, "sigma_y", sigma_y, 0)
        y = self.forward(x)
        if sigma_y == 0:
            return y
        seeds = list(range(x.shape[0])) if seeds is None else list(seeds)
        return y + sigma_y * NoiseSource(seeds).normal(MEASUREMENT_STEP, y)

    def matrix(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """The dense (n_out, n_in) matrix (forward applied to the identity: small problems only)."""
        n_in = math.prod(self.in_shape)
        eye = torch.eye(n_in, dtype=dtype).reshape(n_in, *self.in_shape)
        return self.forward(eye).reshape(n_in, -1).T.contiguous()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(in={self.in_shape}, out={self.out_shape})"


class LinearOperator(Operator):
    """A dense matrix (m, n) acting on x of shape ``shape`` (n elements): for small problems and
    tests. Its SVD is computed once (torch.linalg.svd); singular values below ``rtol`` times the
    largest count as zero."""

    name = "LinearOperator"

    def __init__(self, matrix: Tensor, shape: Sequence[int], rtol: float = 1e-10):
        M = torch.as_tensor(matrix, dtype=torch.float64)
        if M.ndim != 2:
            raise ValueError(f"LinearOperator: matrix must be 2-D (m, n), got shape {tuple(M.shape)}")
        self.in_shape = tuple(int(v) for v in shape)
        if math.prod(self.in_shape) != M.shape[1]:
            raise ValueError(f"LinearOperator: shape {self.in_shape} has {math.prod(self.in_shape)} elements, "
                             f"the matrix has {M.shape[1]} columns")
        if not bool(torch.isfinite(M).all()):
            raise ValueError("LinearOperator: matrix contains NaN or inf")
        self.M, self.out_shape, self.rtol = M, (M.shape[0],), float(rtol)
        self._svd: SVD | None = None

    def _forward(self, x):
        return x.reshape(x.shape[0], -1) @ self.M.to(x.dtype).T

    def _adjoint(self, y):
        return (y @ self.M.to(y.dtype)).reshape(y.shape[0], *self.in_shape)

    def svd(self) -> SVD:
        if self._svd is None:
            U, S, Vh = torch.linalg.svd(self.M, full_matrices=True)
            r = int((S > self.rtol * S.max()).sum()) if S.numel() else 0
            Ur, sv = U[:, :r], S[:r]
            shape = self.in_shape
            self._svd = SVD(
                sv=sv,
                Vt=lambda x: x.reshape(x.shape[0], -1) @ Vh.to(x.dtype).T,
                V=lambda z: (z @ Vh.to(z.dtype)).reshape(z.shape[0], *shape),
                Ut=lambda y: y @ Ur.to(y.dtype),
                U=lambda z: z @ Ur.to(z.dtype).T,
            )
        return self._svd
