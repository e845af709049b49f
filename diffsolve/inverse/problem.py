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

from ..tensors import bc

from ..checks import check_number
from ..rewards import Reward
from .operators import Operator

__all__ = ["Problem"]


@dataclass(frozen=True)
class Problem(Reward):
    """The measurement ``y`` (shape (B, *operator.out_shape), or (1, ...) for one measurement
    shared by every sample) of ``operator`` with noise ``sigma_y`` (in the prior's data units;
    0 for a noiseless measurement).

    As a :class:`~diffsolve.rewards.Reward` its value is :meth:`log_likelihood` and its twist at
    level s (TDS Eq. 8) inflates the noise by x0-hat's uncertainty:
    ``-|y - A x0|^2 / (2 (sigma_y^2 + r_s^2))`` with ``r_s^2 = v s^2 / (v + s^2)``, v =
    ``data_var`` (the data's variance per coordinate)."""

    operator: Operator
    y: Tensor
    sigma_y: float
    data_var: float = 1.0
    name = "likelihood"

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
        check_number("Problem", "data_var", self.data_var, 0, low_open=True)

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

    def value(self, x0: Tensor) -> Tensor:
        return self.log_likelihood(x0)

    def grad(self, x0: Tensor) -> Tensor:
        """The gradient of :meth:`log_likelihood` in x0: A^T (y - A x0) / sigma_y^2."""
        var = self.sigma_y**2 if self.sigma_y > 0 else 1.0
        return self.operator.adjoint(self.residual(x0)) / var

    def twist_variance(self, s: float | Tensor) -> float | Tensor:
        """sigma_y^2 + r_s^2, r_s^2 = v s^2 / (v + s^2) [TDS Eq. 8] (a float, or (B,) per row)."""
        s2 = s * s
        return self.sigma_y ** 2 + self.data_var * s2 / (self.data_var + s2)

    def twist(self, x0: Tensor, s: float | Tensor) -> Tensor:
        r = self.residual(x0).flatten(1)
        return -(r * r).sum(1) / (2 * self.twist_variance(s))

    def twist_grad(self, x0: Tensor, s: float | Tensor) -> Tensor:
        return self.operator.adjoint(self.residual(x0)) / bc(self.twist_variance(s), x0)
