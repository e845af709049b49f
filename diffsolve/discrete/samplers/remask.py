"""Remasking decoding: commit the most confident tokens, and send back the least confident
committed ones to be drawn again with more context.

ReMDM [Wang et al. 2025, "Remasking discrete diffusion models with inference-time scaling",
Sec. 3] lets a decoded token return to the mask: from t to s < t, with remasking rate sigma_t,

    q(z_s | z_t = x) = (1 - sigma_t) x + sigma_t m                       (unmasked z_t)   [ReMDM Sec. 3]
    q(z_s | z_t = m) = (alpha_s - (1 - sigma_t) alpha_t) / (1 - alpha_t) x
                       + (1 - alpha_s - sigma_t alpha_t) / (1 - alpha_t) m    (masked z_t)

so that the marginal masking schedule alpha is kept, with sigma_t <= min(1, (1 - alpha_s) / alpha_t).
Its confidence schedule ("ReMDM-conf", Sec. 4.1) spreads the remasking over the decoded tokens
by their confidence at the time they were decoded, psi^(l) = the probability the model gave
the token when it was unmasked:

    sigma_t^(l) = eta_conf^(l) sigma_t,   eta_conf^(l) = exp(-psi^(l)) / sum_l' exp(-psi^(l'))   [ReMDM Sec. 4.1]

so that the least confident tokens are the likeliest to be remasked.

This sampler is the fixed-count, deterministic-choice version of that rule, in the form used by
confidence decoders [LLaDA Alg. 5; MDPO's low-confidence remasking]: with ``k_i`` tokens to
commit at step i (:func:`~diffsolve.discrete.schedules.unmask_counts`) it

1. remasks the ``r_i = floor(eta * k_i)`` committed free tokens of lowest stored confidence
   psi (the ``r_i`` largest eta_conf), except in the last ``final_steps`` steps;
2. commits the ``k_i + r_i`` most confident drawn tokens (``score``) among the positions that
   were masked before the step (a position remasked now is drawn again at a later step),

so the masked count follows the schedule exactly, ``M_{i+1} = M_i - k_i``, and everything is
committed after ``nfe`` steps; ``r_i`` is capped so that ``k_i + r_i`` never exceeds the masked
count. psi is stored in ``ctx.state["psi"]`` when a token is committed (ReMDM's psi).
``eta = 0`` is :class:`~.confidence.Confidence` decoding.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...checks import check_int, check_number
from ..schedules import get_schedule, unmask_counts
from .ancestral import _check_temperature
from .base import SCORES, Sampler, StepIn, confidence_score, draw_tokens, register, top_k_mask

__all__ = ["Remask"]


@register
class Remask(Sampler):
    """ReMDM-conf remasking: commit the k_i most confident tokens plus as many as it remasks of the least confident committed ones."""
    name = "remask"
    aliases = ("remdm", "remdm-conf")
    paper = "Wang et al. 2025 (ReMDM), Sec. 3 remasking posterior and Sec. 4.1 confidence schedule; LLaDA Alg. 5"

    def __init__(self, eta: float = 0.5, final_steps: int = 1, score: str = "confidence", temperature: float = 1.0,
                 schedule: str = "linear"):
        self.eta = check_number("remask", "eta", eta, 0.0, 1.0)
        self.final_steps = check_int("remask", "final_steps", final_steps, minimum=0)
        if score not in SCORES:
            raise ValueError(f"remask: score={score!r} is not accepted; accepted: {', '.join(SCORES)}")
        self.score = score
        self.temperature = _check_temperature(temperature)
        self.schedule = get_schedule(schedule).name

    def start(self, state: dict, x: Tensor, free: Tensor, steps: int | None) -> None:
        todo = (x == state["mask_id"]) & free
        m = todo.sum(1).tolist()
        state["counts"] = torch.tensor([unmask_counts(int(r), steps, self.schedule) for r in m], dtype=torch.long)
        state["psi"] = torch.full(x.shape, float("inf"), dtype=torch.float64, device=x.device)
        state["info"] = {"remasked": 0}

    def step(self, ctx: StepIn) -> Tensor:
        st = ctx.state
        k = st["counts"][:, ctx.i].to(ctx.x.device)
        if not bool((k > 0).any()):
            return ctx.x  # nothing to commit (nfe > tokens): no call, nothing remasked
        p = ctx.probs()
        b, n, v = p.shape
        tokens = draw_tokens(p, ctx.uniform((n,)), self.temperature)
        todo = ctx.masked & ctx.free
        committed = ctx.free & ~ctx.masked
        if ctx.i < ctx.steps - self.final_steps:
            r = torch.floor(self.eta * k.double()).long()  # r_i = floor(eta k_i)
            r = torch.minimum(torch.minimum(r, committed.sum(1)), todo.sum(1) - k).clamp_min(0)
        else:
            r = torch.zeros_like(k)
        # the r_i committed tokens with the lowest stored confidence psi [ReMDM Sec. 4.1, largest eta_conf]
        remask = top_k_mask(-st["psi"], committed, r)
        # commit k_i + r_i of the positions masked before this step [LLaDA Alg. 5]
        commit = top_k_mask(confidence_score(p, tokens, self.score), todo, k + r)
        psi = confidence_score(p, tokens, "confidence")
        st["psi"] = torch.where(commit, psi, torch.where(remask, torch.inf, st["psi"]))
        st["info"]["remasked"] += int(r.sum())
        x = torch.where(commit, tokens, ctx.x)
        return torch.where(remask, torch.full_like(x, ctx.mask_id), x)
