"""Approximate joint sampling of the masked tokens by self-normalised importance sampling with a
sequence-level energy (EDLM).

A masked denoiser gives per-position conditionals; drawing several positions from them at once
samples the product ``q(x0 | x_t) = prod_i p(x0_i | x_t)``, not the joint ``p(x0 | x_t)``, which
is where few-step samplers lose quality [EDLM Sec. 3]. EDLM [Xu et al. 2025, "Energy-based
diffusion language models for text generation", Sec. 3-4] corrects the product with a residual
energy, ``p(x0 | x_t) ∝ q(x0 | x_t) exp(-E(x0, x_t))``; with an autoregressive model (or any
sequence log-probability ``log p(x0)``) the energy is ``E = -log p(x0) + log q(x0 | x_t)``
[EDLM Sec. 3.2, AR energy], and sampling uses importance sampling with ``q`` as the proposal
[EDLM Sec. 4, Alg. 1]:

    x^(k) ~ q(. | x_t),   k = 1..K              (all masked positions, float64 inverse-CDF draws, uniforms 2..K+1)
    log w_k = log p(x^(k)) - sum_{i masked} log q(x^(k)_i | x_t)                   [EDLM Sec. 4]
    k* ~ softmax(log w)                          (one float64 uniform per row, draw 1)

then the positions the fixed-count schedule commits at this step (``k_i`` from
:func:`~diffsolve.discrete.schedules.unmask_counts`) take their tokens from ``x^(k*)``: chosen
uniformly at random (``order="random"``, MDLM's order [MDLM Sec. 4]; draw 0) or the most
confident ones of ``x^(k*)`` (``order="confidence"``). As K grows, ``x^(k*)`` tends to a draw of
the exact joint ``p(x0 | x_t)`` (given an exact energy) and the committed positions to their
exact joint conditional, so the sampler tends to an exact one; K = 1 is plain parallel decoding
from the product.

``energy``: a callable on full (N, L) long token tensors returning (N,) log-probabilities (up to
a constant), called once per step on all B*K candidates (e.g. ``MarkovChain.log_prob``, an AR
model's log-likelihood), or an object with such a ``log_prob`` method. The calls are counted
apart from the network's: ``info["energy_calls"]`` (batched calls) and ``info["energy_evals"]``
(sequences scored); ``info["mean_ess"]`` is the mean effective sample size ``1 / sum w^2``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from ...checks import check_choice, check_int, check_number
from ..schedules import get_schedule, unmask_counts
from .base import Sampler, StepIn, draw_tokens, register, top_k_mask

__all__ = ["Joint"]

ORDERS = ("random", "confidence")


@register
class Joint(Sampler):
    """EDLM importance sampling: draw K factorised completions, keep one by energy weights, commit the scheduled positions from it."""
    name = "joint"
    aliases = ("edlm", "importance")
    paper = "Xu et al. 2025 (EDLM), Sec. 3.2 AR energy and Sec. 4 importance sampling (Alg. 1)"

    def __init__(self, energy: Callable[[Tensor], Tensor] | Any = None, candidates: int = 8, order: str = "random",
                 temperature: float = 1.0, schedule: str = "linear"):
        if energy is not None and not callable(energy):
            if callable(getattr(energy, "log_prob", None)):
                energy = energy.log_prob
            else:
                raise TypeError(f"joint: energy={energy!r} is not accepted; accepted: a callable (N, L) tokens -> "
                                "(N,) log-probabilities, or an object with such a log_prob method")
        self.energy = energy
        self.candidates = check_int("joint", "candidates", candidates)
        self.order = check_choice("joint", "order", order, ORDERS)
        # the proposal must be a distribution with full support on the drawn tokens: temperature > 0
        self.temperature = check_number("joint", "temperature", temperature, 0.0, low_open=True)
        self.schedule = get_schedule(schedule).name

    def plan(self, free_count: int, nfe: int | None) -> int:
        if self.energy is None:
            raise ValueError("joint: energy=None is not accepted; pass energy=<a callable giving (N,) sequence "
                             "log-probabilities of (N, L) tokens>, e.g. chain.log_prob or an AR model's")
        return super().plan(free_count, nfe)

    def start(self, state: dict, x: Tensor, free: Tensor, steps: int | None) -> None:
        m = ((x == state["mask_id"]) & free).sum(1).tolist()
        state["counts"] = torch.tensor([unmask_counts(int(r), steps, self.schedule) for r in m], dtype=torch.long)
        state["info"] = {"energy_calls": 0, "energy_evals": 0, "mean_ess": 1.0 if self.candidates == 1 else 0.0}
        state["ess_sum"], state["ess_n"] = 0.0, 0

    def _energy(self, seqs: Tensor, st: dict) -> Tensor:
        out = self.energy(seqs)
        out = torch.as_tensor(out).to(device=seqs.device, dtype=torch.float64)
        if tuple(out.shape) != (seqs.shape[0],):
            raise ValueError(f"joint: energy returned shape {tuple(out.shape)} for {seqs.shape[0]} sequences; "
                             f"expected ({seqs.shape[0]},) log-probabilities")
        st["info"]["energy_calls"] += 1
        st["info"]["energy_evals"] += int(seqs.shape[0])
        return out

    def step(self, ctx: StepIn) -> Tensor:
        st = ctx.state
        k = st["counts"][:, ctx.i].to(ctx.x.device)
        if not bool((k > 0).any()):
            return ctx.x  # nothing to commit: no network or energy call
        p = ctx.probs()
        b, n, v = p.shape
        K = self.candidates
        todo = ctx.masked & ctx.free
        logq_all = torch.log_softmax(torch.log(p) / self.temperature, dim=-1)  # the proposal's per-position law
        cands = torch.stack([torch.where(todo, draw_tokens(p, ctx.uniform((n,), draw=2 + j), self.temperature),
                                         ctx.x) for j in range(K)], 1)  # (B, K, L)
        logq = torch.where(todo[:, None, :], logq_all[:, None].expand(b, K, n, v).gather(
            -1, cands.clamp_max(v - 1)[..., None]).squeeze(-1), torch.zeros((), dtype=torch.float64)).sum(-1)
        if K > 1:
            logp = self._energy(cands.reshape(b * K, n), st).reshape(b, K)
            logw = logp - logq  # [EDLM Sec. 4] self-normalised importance weights
            top = logw.max(1, keepdim=True).values
            w = torch.where(torch.isfinite(top), torch.exp(logw - top), torch.ones_like(logw))
            w = torch.nan_to_num(w, nan=0.0)
            w = w / w.sum(1, keepdim=True)
            u = ctx.uniform((1,), draw=1)  # (B, 1)
            pick = (torch.cumsum(w, 1) < u).sum(1).clamp_max(K - 1)
            st["ess_sum"] += float((1.0 / (w * w).sum(1)).sum())
            st["ess_n"] += b
            st["info"]["mean_ess"] = st["ess_sum"] / st["ess_n"]
        else:
            pick = torch.zeros(b, dtype=torch.long, device=ctx.x.device)
        chosen = cands[torch.arange(b, device=ctx.x.device), pick]  # (B, L)
        if self.order == "random":
            score = ctx.uniform((n,), draw=0)
        else:
            score = p.gather(-1, chosen.clamp_max(v - 1)[..., None]).squeeze(-1)
        commit = top_k_mask(score, todo, k)
        return torch.where(commit, chosen, ctx.x)
