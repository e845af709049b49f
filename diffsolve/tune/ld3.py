"""LD3: the noise levels learned by descending the student's distance to the teacher
(Tong et al., ICLR 2025, "Learning to Discretize Denoising Diffusion ODEs").

The student is the solver run on the grid ``xi(theta)`` (:class:`~diffsolve.tune.levels.LevelParam`,
a cumulative softmax in lambda [LD3 Sec. 3.2]); the loss is the distance of its samples to the
teacher's from the same noise, ``L(theta) = || Psi_xi(x_T) - Psi*(x_T) ||`` over the tuning
batch [LD3 Eq. 6, the hard loss: the distance our benchmark reports], minimised by Adam
[LD3 Alg. 1] with a cosine learning-rate decay (:func:`~diffsolve.tune.adam.adam_fd`).

Differences from the paper, said here once: our solvers compute their coefficients from the
levels in float64 Python arithmetic, not in autograd, so the gradient with respect to the
``m + 1`` logits is taken by central finite differences (``2 (m + 1)`` student runs per
iteration: cheap at the 3-20 levels a fast sampler has); the soft teacher-forcing slack (LD3
Eq. 7, a per-sample ball around the starting noise) is not used, because the distance users
and the benchmark measure is the hard one from the same noise. The best iterate seen is
returned (the loss is not smooth where a sample changes mode).

    >>> from diffsolve.models.gmm import builtin
    >>> from diffsolve.tune.levels import LevelParam
    >>> from diffsolve.tune.teacher import Teacher
    >>> t = Teacher(builtin("gmm-2d"), seeds=range(32), shape=(2,), path="edm", steps=20)
    >>> lp = LevelParam(t.s_start, t.s_lo, m=3, final="zero")
    >>> th0 = lp.theta_of(t.karras(4, "zero"))
    >>> th, loss, hist = ld3_levels(t, "dpm++2m", {}, lp, th0, iters=5)
    >>> loss <= hist[0]
    True
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from .adam import Stop, adam_fd
from .levels import LevelParam
from .teacher import BudgetSpent

__all__ = ["ld3_levels"]


def ld3_levels(teacher, solver: str, options: dict[str, Any], param: LevelParam, theta0: np.ndarray, *,
               iters: int = 100, lr: float = 0.05, eps: float = 1e-3,
               on_iter: Callable[[int, float], None] | None = None) -> tuple[np.ndarray, float, list[float]]:
    """Adam on the log distance to the teacher [LD3 Alg. 1]; returns the best logits, their log
    distance and the log distance of every iterate. Stops early (with the best so far) when the
    teacher's call budget is spent."""

    def loss(th: np.ndarray) -> float:
        try:
            e = teacher.error(solver, param.grid(th), options)  # [LD3 Eq. 6] the hard loss
        except BudgetSpent:
            raise Stop from None
        return math.log(e) if e > 0 else -math.inf

    tick = None if on_iter is None else (lambda it, f, th: on_iter(it, f))
    return adam_fd(loss, theta0, iters=iters, lr=lr, eps=eps, on_iter=tick)
