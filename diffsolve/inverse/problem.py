"""An inverse problem: a linear-Gaussian measurement y = A x0 + sigma_y n of the prior's data.

Its log-likelihood ``log N(y; A x0, sigma_y^2 I)`` is a *reward* on data (DESIGN.md: rewards
and measurements are one idea): gradient guidance (DPS, PiGDM), particle weights (SMC) and
data-consistency steps (DDNM, DiffPIR, DDRM) all read it from here.

    >>> import torch
    >>> from diffsolve.inverse import LinearOperator, Problem
    >>> A = LinearOperator(torch.eye(2, dtype=torch.float64), (2,))
    >>> p = Problem(A, torch.tensor([[1.0, 0.0]], dtype=torch.float64), sigma_y=0.5)
    >>> p.log_likelihood(torch.tensor([[1.0, 1.0]], dtype=torch.float64)).tolist()   # -|r|^2 / (2 sigma^2)
    [-2.0]
    >>> p.grad(torch.tensor([[1.0, 1.0]], dtype=torch.float64)).tolist()             # A^T r / sigma^2
    [[0.0, -4.0]]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..checks import check_number
from .operators import Operator

__all__ = ["Problem"]


@dataclass(frozen=True)
class Problem:
    """The measurement ``y`` (shape (B, *operator.out_shape), or (1, ...) for one measurement
    shared by every sample) of ``operator`` with noise ``sigma_y`` (in the prior's data units;
    0 for a noiseless measurement)."""

    operator: Operator
    y: Tensor
    sigma_y: float

    def __post_init__(self):
        if not isinstance(self.operator, Operator):
            raise TypeError(f"operator must be a diffsolve.inverse.Operator, got {type(self.operator).__name__}")
        check_number("Problem", "sigma_y", self.sigma_y, 0)
        y = self.y
        if not isinstance(y, Tensor) or y.is_complex() or not y.is_floating_point():
            raise TypeError(f"y must be a real floating tensor of shape (batch, "
                            f"{', '.join(map(str, self.operator.out_shape))}), got {type(y).__name__}")
        if tuple(y.shape[1:]) != tuple(self.operator.out_shape):
            raise ValueError(f"y has shape {tuple(y.shape)}; the operator measures "
                             f"(batch, {', '.join(map(str, self.operator.out_shape))})")
        if not bool(torch.isfinite(y).all()):
            raise ValueError("y contains NaN or inf")

    def residual(self, x0: Tensor) -> Tensor:
        """y - A x0 (broadcast over the batch when y has one row)."""
        return self.y.to(x0.dtype) - self.operator.forward(x0)

    def log_likelihood(self, x0: Tensor) -> Tensor:
        """log N(y; A x0, sigma_y^2 I) up to its constant, per sample: -|y - A x0|^2 / (2 sigma_y^2)
        (for sigma_y = 0: -|y - A x0|^2 / 2, the least-squares fit, as the noiseless limit is
        degenerate)."""
        r = self.residual(x0).reshape(x0.shape[0], -1)
        var = self.sigma_y**2 if self.sigma_y > 0 else 1.0
        return -(r * r).sum(1) / (2 * var)

    def grad(self, x0: Tensor) -> Tensor:
        """The gradient of :meth:`log_likelihood` in x0: A^T (y - A x0) / sigma_y^2."""
        var = self.sigma_y**2 if self.sigma_y > 0 else 1.0
        return self.operator.adjoint(self.residual(x0)) / var
