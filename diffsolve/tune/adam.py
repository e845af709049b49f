"""Adam on a loss of a few real parameters whose gradient is taken by central finite
differences: the optimiser of LD3's levels and of the ``auto`` rule's warp.

Our solvers compute their coefficients from the noise levels in float64 Python arithmetic, not in
autograd, so a loss of the levels has no autograd gradient; with the 3-20 parameters of a fast
sampler's grid, ``2 n`` extra evaluations per step are cheap. The best iterate is returned (a
distance of samples to a teacher is not smooth where a sample changes mode), and a non-finite
loss sends the search back to the best point with half the step.

    >>> import numpy as np
    >>> th, f, hist = adam_fd(lambda t: float(((t - 3.0) ** 2).sum()), np.zeros(2), iters=300, lr=0.1)
    >>> np.round(th, 2).tolist(), f < 1e-3
    ([3.0, 3.0], True)
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

__all__ = ["adam_fd", "Stop"]


class Stop(Exception):
    """Raised by a loss to end the search early (a spent budget); the best point so far is kept."""


def adam_fd(loss: Callable[[np.ndarray], float], theta0: np.ndarray, *, iters: int, lr: float = 0.05,
            eps: float = 1e-3, on_iter: Callable[[int, float, np.ndarray], None] | None = None,
            ) -> tuple[np.ndarray, float, list[float]]:
    """Minimise ``loss`` from ``theta0``: Adam (beta 0.9 / 0.999) with a cosine-decayed step and
    central-difference gradients of step ``eps``. Returns (best theta, its loss, the loss of every
    iterate). A loss raising :class:`Stop` ends the search."""
    th = np.array(theta0, dtype=np.float64)
    m1, m2 = np.zeros_like(th), np.zeros_like(th)
    b1, b2 = 0.9, 0.999
    best_th, best, hist = th.copy(), math.inf, []
    try:
        for it in range(iters):
            f = loss(th)
            hist.append(f)
            if f < best:
                best, best_th = f, th.copy()
            if on_iter is not None:
                on_iter(it, f, th)
            if not math.isfinite(f):  # diverged: back to the best point with a smaller step
                th, lr = best_th.copy(), lr / 2
                continue
            g = np.zeros_like(th)
            for i in range(th.size):
                e = np.zeros_like(th)
                e[i] = eps
                fp, fm = loss(th + e), loss(th - e)
                g[i] = (fp - fm) / (2 * eps) if math.isfinite(fp) and math.isfinite(fm) else 0.0
            m1 = b1 * m1 + (1 - b1) * g
            m2 = b2 * m2 + (1 - b2) * g * g
            step = lr * 0.5 * (1 + math.cos(math.pi * it / iters))
            th = th - step * (m1 / (1 - b1 ** (it + 1))) / (np.sqrt(m2 / (1 - b2 ** (it + 1))) + 1e-8)
    except Stop:
        pass
    return best_th, best, hist
