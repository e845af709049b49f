"""The free noise levels of a grid as unconstrained parameters, the way LD3 learns them.

A grid of a solver run starts at ``s_start`` (where the noise is scaled) and ends either at 0
(the last step denoises) or at its last level. Its ``m`` free levels lie in ``[s_lo, s_start)``
and are parametrised in ``lambda = -log s`` by ``m + 1`` logits ``theta``: the softmax of
``theta`` splits ``lambda(s_lo) - lambda(s_start)`` into ``m + 1`` positive increments, the first
``m`` of which place the levels [LD3 Sec. 3.2: the time steps as a cumulative softmax of
learnable parameters, so every parameter value is a valid, strictly decreasing grid]. The last
increment is the slack between the last free level and ``s_lo``.

    >>> lp = LevelParam(s_start=80.0, s_lo=0.002, m=3, final="zero")
    >>> [round(v, 3) for v in lp.grid(lp.theta_of(lp.grid(lp.uniform())))]
    [80.0, 5.657, 0.4, 0.028, 0.0]
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["LevelParam"]


class LevelParam:
    """``m`` free levels between ``s_start`` (excluded) and ``s_lo`` (included), final
    ``"zero"`` (a last step to 0 is appended) or ``"s_min"`` (the grid ends at its last free level)."""

    def __init__(self, s_start: float, s_lo: float, m: int, final: str):
        if not (0 < s_lo < s_start and math.isfinite(s_start)):
            raise ValueError(f"need 0 < s_lo < s_start < inf, got s_lo={s_lo}, s_start={s_start}")
        if m < 1:
            raise ValueError(f"a grid needs at least one free level, got m={m}")
        if final not in ("zero", "s_min"):
            raise ValueError(f"final must be 'zero' or 's_min', got {final!r}")
        self.s_start, self.s_lo, self.m, self.final = float(s_start), float(s_lo), int(m), final
        self.lam0, self.lam1 = -math.log(s_start), -math.log(s_lo)

    @property
    def size(self) -> int:
        """The number of parameters (``m + 1``)."""
        return self.m + 1

    def uniform(self) -> np.ndarray:
        """The logits of the grid uniform in lambda."""
        return np.zeros(self.size)

    def grid(self, theta: np.ndarray) -> list[float]:
        """The full grid (start, free levels, and 0 when final is ``"zero"``) of ``theta``."""
        th = np.asarray(theta, dtype=np.float64)
        w = np.exp(th - th.max())
        inc = w / w.sum() * (self.lam1 - self.lam0)  # [LD3 Sec. 3.2] cumulative softmax in lambda
        lam = self.lam0 + np.cumsum(inc)[: self.m]
        lam[-1] = min(lam[-1], self.lam1)  # rounding must never pass the lowest trained level
        levels = [self.s_start] + [float(math.exp(-v)) for v in lam]
        return levels + [0.0] if self.final == "zero" else levels

    def theta_of(self, grid: Sequence[float]) -> np.ndarray:
        """Logits that reproduce ``grid`` (its start must be ``s_start``; levels below ``s_lo``
        are clipped to it, with a small floor on every increment)."""
        g = [float(v) for v in grid]
        if self.final == "zero":
            g = g[:-1]
        if len(g) != self.m + 1:
            raise ValueError(f"grid has {len(g) - 1} free levels, this parametrisation {self.m}")
        lam = np.array([-math.log(max(v, self.s_lo)) for v in g])
        inc = np.append(np.diff(lam), self.lam1 - lam[-1])
        return np.log(np.maximum(inc, 1e-4 * (self.lam1 - self.lam0)))
