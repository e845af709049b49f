"""Masking schedules of absorbing-state diffusion: ``alpha(t)`` is the probability that a token
is still clean at time t, from ``alpha(0) = 1`` (data) to ``alpha(1) = 0`` (all masked)
[MDLM Sec. 3.1; Shi et al. (MD4) Table 1].

A sampler that steps ``t_0 = 1 > t_1 > ... > t_n = 0`` on the uniform time grid unmasks a
masked token at step ``t -> s`` with probability ``(alpha(s) - alpha(t)) / (1 - alpha(t))``
[MDLM Eq. 7], and a decoder that commits a fixed number of tokens per step commits
``round(L alpha(t_{i+1})) - round(L alpha(t_i))`` of them (:func:`unmask_counts`).

    >>> [round(get_schedule("cosine").alpha(t), 4) for t in (0.0, 0.5, 1.0)]
    [1.0, 0.7071, 0.0]
    >>> unmask_counts(10, 4, "linear")
    [2, 3, 3, 2]
"""

from __future__ import annotations

import math
from typing import Callable

__all__ = ["MaskSchedule", "SCHEDULES", "get_schedule", "unmask_counts", "time_grid"]


class MaskSchedule:
    """``alpha(t)`` with its derivative ``dalpha(t)``; ``name`` for listings."""

    def __init__(self, name: str, alpha: Callable[[float], float], dalpha: Callable[[float], float]):
        self.name, self._alpha, self._dalpha = name, alpha, dalpha

    def alpha(self, t: float) -> float:
        return min(1.0, max(0.0, float(self._alpha(t))))

    def dalpha(self, t: float) -> float:
        return float(self._dalpha(t))

    def unmask_prob(self, t: float, s: float) -> float:
        """P(a token masked at t is clean at s < t) = (alpha(s) - alpha(t)) / (1 - alpha(t)) [MDLM Eq. 7]."""
        a_t, a_s = self.alpha(t), self.alpha(s)
        return 1.0 if a_t >= 1.0 else min(1.0, max(0.0, (a_s - a_t) / (1.0 - a_t)))

    def rate(self, t: float) -> float:
        """The unmasking rate -alpha'(t) / (1 - alpha(t)) of a masked token at t (Euler tau-leaping)."""
        a = self.alpha(t)
        return math.inf if a >= 1.0 else -self.dalpha(t) / (1.0 - a)

    def __repr__(self) -> str:
        return f"MaskSchedule({self.name!r})"


SCHEDULES: dict[str, MaskSchedule] = {
    "linear": MaskSchedule("linear", lambda t: 1 - t, lambda t: -1.0),
    "cosine": MaskSchedule("cosine", lambda t: math.cos(math.pi * t / 2), lambda t: -math.pi / 2 * math.sin(math.pi * t / 2)),
    "square": MaskSchedule("square", lambda t: 1 - t * t, lambda t: -2 * t),
    "sqrt": MaskSchedule("sqrt", lambda t: 1 - math.sqrt(t), lambda t: -0.5 / math.sqrt(max(t, 1e-300))),
}


def get_schedule(schedule: str | MaskSchedule) -> MaskSchedule:
    """A schedule by name (``linear``, ``cosine``, ``square``, ``sqrt``) or the one given."""
    if isinstance(schedule, MaskSchedule):
        return schedule
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown masking schedule {schedule!r}; accepted: {', '.join(SCHEDULES)}")
    return SCHEDULES[schedule]


def time_grid(steps: int) -> list[float]:
    """``steps + 1`` uniform times from 1 to 0."""
    return [1.0 - i / steps for i in range(steps)] + [0.0]


def unmask_counts(length: int, steps: int, schedule: str | MaskSchedule = "linear") -> list[int]:
    """How many of ``length`` masked tokens a fixed-count decoder commits at each of ``steps``
    steps: the differences of ``round(length * alpha(t_i))`` on the uniform grid (sums to
    ``length``; a step may get 0 when steps > length)."""
    sch = get_schedule(schedule)
    clean = [round(length * sch.alpha(t)) for t in time_grid(steps)]
    clean[-1] = length
    return [b - a for a, b in zip(clean[:-1], clean[1:])]
