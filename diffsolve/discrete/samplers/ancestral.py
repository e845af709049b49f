"""Samplers that follow the reverse process in time: MDLM's ancestral step (Tweedie
tau-leaping coincides with it for absorbing diffusion) and Euler tau-leaping.

From t to s < t a masked token becomes clean with probability [MDLM Eq. 7]

    P(unmask) = (alpha(s) - alpha(t)) / (1 - alpha(t)),   x0 ~ p_theta(x0 | x_t),

independently per position. Tweedie tau-leaping [SEDD Sec. 4.2] takes the exact transition of
the reverse process with the denoiser held fixed over the step; for the absorbing state that
transition is the one above, so it is this sampler (alias ``tweedie``). Euler tau-leaping
[Campbell et al. 2022; SEDD Eq. 18] uses the rate at t instead: ``P = (t - s) * (-alpha'(t)) /
(1 - alpha(t))``, clipped to 1; it approaches the ancestral step as steps shrink.

Steps that commit nothing leave the sequence unchanged, and with the no-change cache the next
call is skipped (counted calls fall below the number of steps; samples are identical).
Both commit every remaining token at the last step (s = 0).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..schedules import get_schedule
from .base import Sampler, StepIn, draw_tokens, register

__all__ = ["Ancestral", "EulerLeap"]


@register
class Ancestral(Sampler):
    """MDLM ancestral sampling: each masked token unmasks with prob (alpha_s - alpha_t)/(1 - alpha_t)."""
    name = "mdlm"
    aliases = ("ancestral", "tweedie")
    paper = "Sahoo et al. 2024 (MDLM), Eq. 7; Lou et al. 2024 (SEDD) Tweedie tau-leaping"

    def __init__(self, schedule: str = "linear", temperature: float = 1.0):
        self.schedule = get_schedule(schedule).name
        self.temperature = _check_temperature(temperature)

    def unmask_prob(self, t: float, s: float) -> float:
        return get_schedule(self.schedule).unmask_prob(t, s)

    def step(self, ctx: StepIn) -> Tensor:
        todo = ctx.masked & ctx.free
        prob = 1.0 if ctx.i == ctx.steps - 1 else self.unmask_prob(ctx.t, ctx.s)
        b, n = ctx.x.shape
        commit = todo & (ctx.uniform((n,), draw=1) < prob)
        p = ctx.probs()  # with the no-change cache, a call at an unchanged sequence is not made
        tokens = draw_tokens(p, ctx.uniform((n,), draw=0), self.temperature)
        return torch.where(commit, tokens, ctx.x)


@register
class EulerLeap(Ancestral):
    """Euler tau-leaping: unmask with probability (t - s) * rate(t), rate = -alpha'(t)/(1 - alpha(t))."""
    name = "euler"
    aliases = ("euler-tau-leaping",)
    paper = "Campbell et al. 2022; Lou et al. 2024 (SEDD) Eq. 18"

    def unmask_prob(self, t: float, s: float) -> float:
        return min(1.0, (t - s) * get_schedule(self.schedule).rate(t))


def _check_temperature(temperature: float) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature < float("inf"):
        raise ValueError(f"temperature must be a finite number >= 0 (0 = argmax), got {temperature!r}")
    return float(temperature)
