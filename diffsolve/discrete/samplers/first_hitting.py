"""The first-hitting sampler: exact, one token per network call.

For a time-free model the reverse process only matters through the order in which tokens are
unmasked: the first time any of the n masked tokens unmasks ("first hitting") one of them,
chosen uniformly, is drawn from its conditional [Zheng et al. 2024, "Masked diffusion models are
secretly time-agnostic masked models and exploit inaccurate categorical sampling", Sec. 4.1,
Alg. 2]; the time of that event need not be sampled since the network ignores it. Committing
one uniformly chosen position at a time from exact conditionals samples the joint
distribution exactly (the chain rule in a random order), so with an exact model this sampler
is unbiased; it needs one call per masked token.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .ancestral import _check_temperature
from .base import Sampler, StepIn, draw_tokens, register

__all__ = ["FirstHitting"]


@register
class FirstHitting(Sampler):
    """Exact: one uniformly chosen masked position per call, drawn from its conditional."""
    name = "first-hitting"
    aliases = ("fhs",)
    paper = "Zheng et al. 2024, Sec. 4.1 (first-hitting sampler)"
    exact = True

    def __init__(self, temperature: float = 1.0):
        self.temperature = _check_temperature(temperature)

    def plan(self, free_count: int, nfe: int | None) -> int:
        if nfe is not None and nfe != free_count:
            raise ValueError(f"the first-hitting sampler commits one token per call, so it makes exactly "
                             f"{free_count} calls here; got nfe={nfe} (pass nfe=None or {free_count}, or use "
                             "'mdlm' / 'confidence' for fewer calls)")
        return free_count

    def step(self, ctx: StepIn) -> Tensor:
        todo = ctx.masked & ctx.free
        b, n = ctx.x.shape
        # one uniformly chosen masked position per row: the largest of i.i.d. uniforms among them
        key = torch.where(todo, ctx.uniform((n,), draw=1), torch.tensor(-1.0, dtype=torch.float64))
        pick = torch.nn.functional.one_hot(key.argmax(1), n).bool() & todo
        p = ctx.probs()
        tokens = draw_tokens(p, ctx.uniform((n,), draw=0), self.temperature)
        return torch.where(pick, tokens, ctx.x)
