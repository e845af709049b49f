"""Particle weights in log space and resampling: groups of K particles, one group per
posterior sample, weights ``logw`` of shape (G, K).

Nothing here exponentiates an unnormalised weight: normalisation is a log-sum-exp, so weights
as sharp as ``log w = -1e8`` stay finite.  Resampling schemes (Douc, Cappe & Moulines 2005)
turn uniforms into K ancestor indices per group by inverting the cumulative weights:

* ``multinomial``: K independent uniforms;
* ``stratified``: one uniform in each of the K strata ``[k/K, (k+1)/K)``;
* ``systematic``: one uniform per group, shifted by k/K (lowest variance, the default).

Uniforms come from per-sample seeds (:func:`uniforms`), so a group's resampling depends only
on its own seed, as every other random draw in diffsolve.

A resampled particle takes its ancestor's state but keeps its *own slot's* noise seed
(:func:`resample_state`): copying the ancestor's seed as well would give the copies the same
future noise, so that they never separate again (resampling would only duplicate particles).

    >>> import torch
    >>> logw = torch.tensor([[0.0, -1e8, -1e8, 0.0]], dtype=torch.float64)   # no overflow
    >>> ess(logw).tolist()
    [2.0]
    >>> ancestors(logw, torch.tensor([[0.1, 0.6, 0.3, 0.9]], dtype=torch.float64), "systematic").tolist()
    [[0, 0, 3, 3]]
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from ..checks import check_choice
from ..noise import NoiseSource

__all__ = ["SCHEMES", "normalise", "ess", "ancestors", "uniforms", "resample_state"]

SCHEMES = ("systematic", "stratified", "multinomial")


def normalise(logw: Tensor) -> Tensor:
    """log of the normalised weights of each group (rows of ``logw``); the largest is shifted
    to 0 first, so that log weights of any size keep their differences."""
    z = logw - logw.max(-1, keepdim=True).values
    return z - torch.logsumexp(z, -1, keepdim=True)


def ess(logw: Tensor) -> Tensor:
    """Effective sample size per group, ``(sum w)^2 / sum w^2``, computed in log space."""
    return torch.exp(-torch.logsumexp(2 * normalise(logw), -1))


def ancestors(logw: Tensor, u: Tensor, scheme: str = "systematic") -> Tensor:
    """K ancestor indices per group (G, K) from uniforms ``u`` (G, K) in (0, 1) (systematic
    reads only the first column)."""
    check_choice("ancestors", "scheme", scheme, SCHEMES)
    G, K = logw.shape
    k = torch.arange(K, dtype=logw.dtype, device=logw.device)
    if scheme == "systematic":
        pos = (u[:, :1] + k) / K
    elif scheme == "stratified":
        pos = (u + k) / K
    else:
        pos = torch.sort(u, -1).values
    cdf = torch.cumsum(normalise(logw).exp(), -1)
    cdf[:, -1] = 1.0  # rounding: the last ancestor is always reachable
    return torch.searchsorted(cdf, pos.contiguous()).clamp_max(K - 1)


def uniforms(seeds: Sequence[int], step: int, num: int, draw: int = 0, device: torch.device | str = "cpu") -> Tensor:
    """(len(seeds), num) float64 uniforms in (0, 1) on ``device``: Phi of the seeds'
    counter-based normals (one row per seed, independent of the batch around it)."""
    z = NoiseSource(seeds).normal(step, torch.empty(len(seeds), num, dtype=torch.float64, device=device), draw)
    return (0.5 * (1 + torch.erf(z / math.sqrt(2)))).clamp(1e-16, 1 - 1e-16)


def resample_state(state, rows: Tensor):
    """The solver state with row k taken from row ``rows[k]`` (sample, x0-hat, history, extra
    tensors) while every row keeps its own noise seeds, so that copies of one ancestor draw
    different noise from the next step on.

    >>> import torch, diffsolve
    >>> from diffsolve.solvers import SolverState
    >>> st = SolverState(y=torch.tensor([[1.0], [2.0]]), i=0, sigmas=torch.tensor([1.0, 0.0]),
    ...                 noise=diffsolve.NoiseSource([7, 8]))
    >>> new = resample_state(st, torch.tensor([1, 1]))
    >>> new.y.tolist(), new.noise.seeds
    ([[2.0], [2.0]], [7, 8])
    """
    return state.reindex(rows).replace(noise=state.noise)
