"""Spectral-space helpers shared by the SVD methods (DDRM, DDNM+): the measurement seen in the
coordinates of the operator's SVD ``A = U diag(sv) V^T``.

Coordinates ``xbar = V^T x`` have ``n = prod(in_shape)`` entries; the first ``r`` (the rank) go
with the singular values, the rest span the null space.  :func:`full_sv` pads ``sv`` with zeros
to length ``n`` so that per-coordinate rules (DDRM's three cases, DDNM+'s Lambda and Gamma) are
one vectorised expression, and :func:`ybar` is the measurement divided into those coordinates,
``ybar = diag(sv)^+ U^T y`` [DDRM Sec. 3.2]: component i has noise ``sigma_y / sv_i``.

    >>> import torch
    >>> from diffsolve.inverse import LinearOperator
    >>> A = LinearOperator(torch.tensor([[2.0, 0.0, 0.0]], dtype=torch.float64), (3,))
    >>> sp = Spectral(A.require_svd("example"), (3,))
    >>> sp.sv.tolist()
    [2.0, 0.0, 0.0]
    >>> sp.ybar(torch.tensor([[4.0]], dtype=torch.float64)).tolist()   # the measured coordinate is 4 / 2
    [[2.0, 0.0, 0.0]]
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..operators import SVD

__all__ = ["Spectral"]


class Spectral:
    """An operator's SVD on flat spectral coordinates of length ``n`` (float64 singular values
    padded with zeros for the null space)."""

    def __init__(self, svd: SVD, in_shape: tuple[int, ...]):
        self.svd, self.in_shape = svd, tuple(in_shape)
        self.n = math.prod(self.in_shape)
        sv = torch.zeros(self.n, dtype=torch.float64, device=svd.sv.device)
        sv[: svd.rank] = svd.sv.to(torch.float64)
        self.sv = sv
        self.measured = sv > 0  #: (n,) bool: the coordinates the measurement sees

    def to(self, x: Tensor) -> Tensor:
        """V^T x: (B, *in_shape) -> (B, n)."""
        return self.svd.Vt(x)

    def back(self, z: Tensor) -> Tensor:
        """V z: (B, n) -> (B, *in_shape)."""
        return self.svd.V(z)

    def ybar(self, y: Tensor) -> Tensor:
        """diag(sv)^+ U^T y, zero on the null space: (B, *out_shape) -> (B, n) (= V^T A^+ y)."""
        return self.svd.pinv_coordinates(y, self.n)

    def noise_level(self, sigma_y: float) -> Tensor:
        """sigma_y / sv_i per coordinate (inf on the null space, 0 everywhere when sigma_y = 0)."""
        if sigma_y == 0:
            return torch.zeros_like(self.sv)
        return torch.where(self.measured, sigma_y / self.sv.clamp_min(1e-300), torch.full_like(self.sv, math.inf))
