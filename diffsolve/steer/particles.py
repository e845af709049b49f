"""Particle populations: G groups of K particles (one group per returned sample), their
log weights, ESS-triggered resampling of the whole solver state, the final draw and the
normalising-constant estimate.

Weights live in log space (:mod:`.resample`).  After a group is resampled its log weights are
all set to the group's log *mean* weight, ``logsumexp(logw) - log K``, so that the running
product of mean weights, the SMC estimate of the normalising constant [Del Moral 2004; TDS
Alg. 1; FK steering Eq. 4], is carried in the weights themselves:

    log Z^ = logsumexp_k(logw_k) - log K      (after the final increment)

and a group that never resamples simply accumulates its weights (adaptive resampling loses
nothing).  ``E[Z^] = Z``: the estimate is unbiased for the chain's
``E[exp(lam r(x_N))]``, tested over many seeds.

    >>> import torch
    >>> P = Particles(seeds=[0], K=4, scheme="systematic", threshold=0.5)
    >>> P.reweight(torch.tensor([0.0, -50.0, -50.0, -50.0], dtype=torch.float64))
    >>> float(P.ess()[0]) < 2     # one particle carries the group: resample at the next check
    True
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from .resample import ancestors, ess, normalise, resample_state, uniforms

__all__ = ["Particles", "particle_seeds"]

_SEED_MOD = 1 << 63
_DRAW = 1000  # the resampling uniforms' draw index (apart from any solver's draws)


def particle_seeds(seeds: Sequence[int], K: int) -> list[int]:
    """K seeds per sample seed (particle k of sample b: ``(seed_b * 1000003 + k + 1) mod 2**63``).

    >>> particle_seeds([0, 5], 2)
    [1, 2, 5000016, 5000017]
    """
    return [(s * 1_000_003 + k + 1) % _SEED_MOD for s in seeds for k in range(K)]


class Particles:
    """The weights of ``len(seeds)`` groups of ``K`` particles (rows ``b K .. b K + K - 1`` of
    the batch are group b's) and their resampling: ``scheme`` from :data:`.resample.SCHEMES`,
    when a group's ESS < ``threshold`` K (1.0: always, 0.0: never).  The resampling uniforms
    of group b depend only on ``seeds[b]`` and the step."""

    def __init__(self, seeds: Sequence[int], K: int, scheme: str = "systematic", threshold: float = 0.5):
        self.seeds, self.K, self.scheme, self.threshold = list(seeds), int(K), scheme, float(threshold)
        self.logw: Tensor | None = None
        self.ess_history: list[float] = []
        self.events: list[int] = []  # steps at which some group resampled
        self.resampled = 0  # group resamplings in all

    @property
    def G(self) -> int:
        return len(self.seeds)

    def reweight(self, increment: Tensor) -> None:
        """Add log-weight increments, one per particle (G K,) in batch order."""
        inc = increment.reshape(self.G, self.K).to(torch.float64)
        self.logw = inc.clone() if self.logw is None else self.logw + inc.to(self.logw.device)

    def ess(self) -> Tensor:
        """(G,) effective sample sizes (K for uniform weights)."""
        if self.logw is None:
            return torch.full((self.G,), float(self.K), dtype=torch.float64)
        return ess(self.logw)

    def resample(self, state, step: int, carry: Sequence[Tensor] = ()):
        """Resample the groups whose ESS is low: returns ``(state, carry)`` with the chosen rows
        of the solver state (:func:`.resample.resample_state`: each particle keeps its own noise
        seed) and of every per-particle tensor in ``carry`` ((G K, ...) each)."""
        e = self.ess()
        self.ess_history.append(float(e.mean()))
        low = e < self.threshold * self.K
        if self.logw is None or not bool(low.any()):
            return state, tuple(carry)
        dev = self.logw.device
        u = uniforms(self.seeds, step, self.K, _DRAW, dev).to(self.logw.dtype)
        keep = torch.arange(self.K, device=dev).expand_as(self.logw)
        local = torch.where(low[:, None], ancestors(self.logw, u, self.scheme), keep)
        mean = torch.logsumexp(self.logw, 1, keepdim=True) - math.log(self.K)
        self.logw = torch.where(low[:, None], mean.expand_as(self.logw), self.logw)
        self.resampled += int(low.sum())
        self.events.append(step)
        rows = (local + self.K * torch.arange(self.G, device=dev)[:, None]).flatten()
        return resample_state(state, rows), tuple(c[rows.to(c.device)] for c in carry)

    def log_normaliser(self) -> Tensor:
        """(G,) log Z^ of each group (see the module docstring)."""
        return torch.logsumexp(self.logw, 1) - math.log(self.K)

    def draw(self, step: int) -> Tensor:
        """One particle per group drawn by weight: (G,) batch rows."""
        u = uniforms(self.seeds, step, 1, _DRAW, self.logw.device).to(self.logw.dtype)
        local = ancestors(self.logw, u, "multinomial")[:, 0]
        return local + self.K * torch.arange(self.G, device=local.device)

    def best(self, score: Tensor) -> Tensor:
        """The particle with the highest ``score`` (G K,) in each group: (G,) batch rows."""
        local = score.reshape(self.G, self.K).argmax(1)
        return local + self.K * torch.arange(self.G, device=local.device)

    def normalised(self) -> Tensor:
        return normalise(self.logw)
