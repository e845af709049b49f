"""Fast-dLLM's confidence-aware parallel decoding: as many tokens per call as the model is sure of.

At every step all masked positions are drawn from the denoiser and scored by the confidence
``c_i`` (the probability of the drawn token). Two rules pick how many to commit:

* threshold rule [Fast-dLLM Sec. 3.3, Eq. 5 / Thm. 1]: commit every allowed position with
  ``c_i >= tau`` (default 0.9); if none passes, commit the single most confident one, so every
  call commits at least one token. Dimple's confident decoding [Yu et al. 2025, "Dimple",
  Sec. 3.3] is the same rule (threshold gamma, at least the top-1 token per iteration) and is
  registered as the alias ``dimple``.
* factor rule [Fast-dLLM Sec. 3.3, factor-based parallel decoding]: sort the confidences
  ``c_(1) >= c_(2) >= ...`` and commit the largest ``n`` with ``(n + 1) (1 - c_(n)) < f``
  (default f = 1), at least one.

Both are adaptive (``budget = "adaptive"``): they run until every position is committed, and
``nfe`` is a cap (None: no cap); at the cap's last step every remaining position is committed.
With ``block_size`` they decode semi-autoregressively [Fast-dLLM Sec. 3.1; LLaDA Sec. 2.4]:
each row works only in the leftmost block that still holds masked free positions. Tokens are
drawn at ``temperature`` by float64 inverse-CDF draws (default 1, the model's law, as the other
samplers here; Fast-dLLM's experiments decode greedily, ``temperature=0``).

The helpers :func:`threshold_commit`, :func:`factor_commit` and :func:`leftmost_block` are
shared with the AdaBlock sampler (:mod:`.adablock`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ...checks import check_number
from .ancestral import _check_temperature
from .base import Sampler, StepIn, confidence_score, draw_tokens, register, top_k_mask
from .confidence import check_block_size

__all__ = ["Threshold", "Factor", "threshold_commit", "factor_commit", "leftmost_block", "at_least_one"]


def at_least_one(commit: Tensor, conf: Tensor, allowed: Tensor) -> Tensor:
    """``commit`` plus, in each row that commits nothing but has an allowed position, the most
    confident allowed position."""
    empty = ~commit.any(1) & allowed.any(1)
    if bool(empty.any()):
        top1 = top_k_mask(conf, allowed, empty.long())
        commit = commit | top1
    return commit


def threshold_commit(conf: Tensor, allowed: Tensor, tau: float) -> Tensor:
    """(B, L) bool: the allowed positions with confidence >= tau, at least the top-1 per row."""
    return at_least_one(allowed & (conf >= tau), conf, allowed)  # [Fast-dLLM Eq. 5; Dimple Sec. 3.3]


def factor_commit(conf: Tensor, allowed: Tensor, factor: float) -> Tensor:
    """(B, L) bool: per row the ``n`` most confident allowed positions, ``n`` the largest with
    ``(n + 1) (1 - c_(n)) < factor`` (``c_(n)`` the n-th largest confidence), at least one."""
    c = torch.where(allowed, conf.double(), torch.tensor(-math.inf, dtype=torch.float64))
    sorted_c = c.sort(dim=1, descending=True).values
    n = torch.arange(1, c.shape[1] + 1, dtype=torch.float64)
    ok = ((n + 1) * (1 - sorted_c) < factor) & torch.isfinite(sorted_c)  # [Fast-dLLM factor rule]
    # the largest n that satisfies it (the condition need not be monotone in n: take the largest)
    count = torch.where(ok, n.long().expand_as(ok), torch.zeros_like(ok, dtype=torch.long)).max(1).values
    count = torch.minimum(count.clamp_min(1), allowed.sum(1))
    return top_k_mask(conf, allowed, count)


def leftmost_block(todo: Tensor, block_size: int | None) -> Tensor:
    """(B, L) bool: ``todo`` restricted, per row, to the leftmost block of ``block_size``
    positions that still holds a ``todo`` position (all of ``todo`` when block_size is None)."""
    if block_size is None:
        return todo
    blocks = torch.arange(todo.shape[1], device=todo.device) // block_size
    big = torch.tensor(torch.iinfo(torch.long).max, device=todo.device)
    current = torch.where(todo, blocks.expand_as(todo), big).min(1).values
    return todo & (blocks[None, :] == current[:, None])


class _Parallel(Sampler):
    """Shared step of the adaptive parallel decoders (``rule`` picks the positions; ``nfe`` is a cap,
    and the last capped step commits everything left)."""
    budget = "adaptive"

    def rule(self, conf: Tensor, allowed: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def allowed(self, ctx: StepIn, p: Tensor) -> Tensor:
        return leftmost_block(ctx.masked & ctx.free, self.block_size)

    def step(self, ctx: StepIn) -> Tensor:
        p = ctx.probs()
        n, v = p.shape[1], p.shape[2]
        tokens = draw_tokens(p, ctx.uniform((n,)), self.temperature)
        todo = ctx.masked & ctx.free
        if ctx.steps is not None and ctx.i >= ctx.steps - 1:
            commit = todo  # the cap is reached: commit every remaining position
        else:
            commit = self.rule(confidence_score(p, tokens, "confidence"), self.allowed(ctx, p))
        return torch.where(commit, tokens, ctx.x)


@register
class Threshold(_Parallel):
    """Fast-dLLM threshold decoding: commit every drawn token with confidence >= tau (at least one per call)."""
    name = "threshold"
    aliases = ("fast-dllm", "dimple")
    paper = "Wu et al. 2025 (Fast-dLLM), Sec. 3.3 threshold rule; Yu et al. 2025 (Dimple), confident decoding"

    def __init__(self, tau: float = 0.9, temperature: float = 1.0, block_size: int | None = None):
        self.tau = check_number("threshold", "tau", tau, 0.0, 1.0, low_open=True)
        self.temperature = _check_temperature(temperature)
        self.block_size = check_block_size(block_size)

    def rule(self, conf: Tensor, allowed: Tensor) -> Tensor:
        return threshold_commit(conf, allowed, self.tau)


@register
class Factor(_Parallel):
    """Fast-dLLM factor decoding: commit the n most confident tokens with (n + 1)(1 - c_n) < f (at least one)."""
    name = "factor"
    aliases = ("fast-dllm-factor",)
    paper = "Wu et al. 2025 (Fast-dLLM), Sec. 3.3 factor-based parallel decoding"

    def __init__(self, factor: float = 1.0, temperature: float = 1.0, block_size: int | None = None):
        self.factor = check_number("factor", "factor", factor, 0.0, low_open=True)
        self.temperature = _check_temperature(temperature)
        self.block_size = check_block_size(block_size)

    def rule(self, conf: Tensor, allowed: Tensor) -> Tensor:
        return factor_commit(conf, allowed, self.factor)
