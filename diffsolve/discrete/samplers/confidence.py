"""Confidence decoding: draw every masked token, keep the ones the model is surest of.

LLaDA's low-confidence remasking [LLaDA Sec. 2.4, Alg. 5]: at each step predict all masked
tokens, commit the ``k_i`` with the highest score and leave the rest masked, with ``k_i`` from
the masking schedule (:func:`~diffsolve.discrete.schedules.unmask_counts`: ``L / nfe`` per step
for the linear one). Scores (:func:`~diffsolve.discrete.samplers.base.confidence_score`): the
drawn token's probability (``confidence``), the top-1 minus top-2 margin (``margin``, Kim et
al. 2025) or the negative entropy (``entropy``).

Semi-autoregressive blocks [LLaDA Sec. 2.4; SDAR; Arriola et al. (BD3-LM)]: with
``block_size`` the sequence is split into blocks decoded left to right, the steps shared
equally among blocks; only the current block's tokens may be committed.

Tokens are drawn at ``temperature`` (1: the model's distribution, 0: argmax) with float64
inverse-CDF draws; confidence decoding at temperature 1 still favours likely tokens through the
choice of positions, so it is biased, and the bias grows with tokens per call (measured in the
benchmark).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..schedules import get_schedule, unmask_counts
from .ancestral import _check_temperature
from .base import SCORES, Sampler, StepIn, confidence_score, draw_tokens, register, top_k_mask

__all__ = ["Confidence", "Margin", "Entropy", "check_block_size", "block_ids"]


def check_block_size(block_size: int | None) -> int | None:
    if block_size is None:
        return None
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive integer or None (one block), got {block_size!r}")
    return block_size


def block_ids(length: int, block_size: int | None) -> Tensor:
    """(L,) the block of every position."""
    return torch.arange(length) // (block_size or length)


@register
class Confidence(Sampler):
    """LLaDA low-confidence remasking: commit the k most confident drawn tokens per step."""
    name = "confidence"
    aliases = ("llada", "low-confidence")
    paper = "Nie et al. 2025 (LLaDA), Sec. 2.4 / Alg. 5; semi-AR blocks"
    default_score = "confidence"

    def __init__(self, score: str | None = None, temperature: float = 1.0, block_size: int | None = None,
                 schedule: str = "linear"):
        score = self.default_score if score is None else score
        if score not in SCORES:
            raise ValueError(f"unknown score {score!r}; accepted: {', '.join(SCORES)}")
        self.score = score
        self.temperature = _check_temperature(temperature)
        self.block_size = check_block_size(block_size)
        self.schedule = get_schedule(schedule).name

    def start(self, state: dict, x: Tensor, free: Tensor, steps: int | None) -> None:
        """Per row and step, how many tokens to commit, and which block each step works on."""
        b, n = x.shape
        blocks = block_ids(n, self.block_size)
        nb = int(blocks.max()) + 1
        if steps < nb:
            raise ValueError(f"nfe={steps} is fewer than the {nb} blocks of size {self.block_size} in length {n}; "
                             f"use nfe >= {nb} or a larger block_size")
        per_block = [steps // nb + (1 if j < steps % nb else 0) for j in range(nb)]
        step_block = torch.repeat_interleave(torch.arange(nb), torch.tensor(per_block))
        todo = (x == state["mask_id"]) & free
        counts = torch.zeros(b, steps, dtype=torch.long)
        start = 0
        for j, k in enumerate(per_block):
            m = (todo & (blocks == j)).sum(1)
            for r in range(b):
                counts[r, start:start + k] = torch.tensor(unmask_counts(int(m[r]), k, self.schedule))
            start += k
        state.update(counts=counts, step_block=step_block, blocks=blocks)

    def allowed(self, ctx: StepIn) -> Tensor:
        """The positions this step may commit: masked, free, in the current block."""
        st = ctx.state
        return ctx.masked & ctx.free & (st["blocks"] == st["step_block"][ctx.i])[None, :]

    def step(self, ctx: StepIn) -> Tensor:
        k = ctx.state["counts"][:, ctx.i]
        if not bool((k > 0).any()):
            return ctx.x
        p = ctx.probs()
        b, n = ctx.x.shape
        tokens = draw_tokens(p, ctx.uniform((n,)), self.temperature)
        commit = top_k_mask(confidence_score(p, tokens, self.score), self.allowed(ctx), k)
        return torch.where(commit, tokens, ctx.x)


@register
class Margin(Confidence):
    """Confidence decoding scored by the top-1 minus top-2 probability margin."""
    name = "margin"
    aliases = ()
    paper = "Kim et al. 2025 (top-2 margin); LLaDA Alg. 5"
    default_score = "margin"


@register
class Entropy(Confidence):
    """Confidence decoding scored by the negative entropy of each position."""
    name = "entropy"
    aliases = ()
    paper = "Ben-Hamu et al. 2025 (entropy-bounded unmasking); LLaDA Alg. 5"
    default_score = "entropy"
