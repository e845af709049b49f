"""Network calls counted at the model, and the no-change cache.

:class:`CountedTokenDenoiser` wraps the model for one run: ``calls`` counts network
evaluations (one per batched call that evaluates at least one row, times the model's
``evals_per_call``: 2 for a guided model that evaluates two networks, 1 by default),
``row_calls`` counts them per sample. With ``cache=True`` and a time-free model [RADD Sec.
3.2], a row whose tokens are the same as at its last evaluation is not evaluated again: its
probabilities are reused, which changes nothing in the samples (the model is a function of
the tokens alone) and saves the calls of the steps at which a sampler committed nothing
(MDLM's caching [MDLM Sec. 4.3]).

    >>> import torch
    >>> from diffsolve.discrete.base import TokenDenoiser
    >>> class Flat(TokenDenoiser):
    ...     vocab_size = 2
    ...     def probs(self, x, t=None):
    ...         return self.keep_unmasked(x, torch.full((*x.shape, 2), 0.5, dtype=torch.float64))
    >>> d = CountedTokenDenoiser(Flat(), cache=True)
    >>> x = torch.tensor([[2, 2], [0, 2]])
    >>> _ = d(x); _ = d(x); _ = d(torch.tensor([[2, 2], [0, 1]]))
    >>> d.calls, d.row_calls.tolist()
    (2, [1, 2])
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import TokenDenoiser, TokenDenoiserWrapper

__all__ = ["CountedTokenDenoiser"]


class CountedTokenDenoiser(TokenDenoiserWrapper):
    """Counts calls of ``inner`` and (``cache=True``, time-free models only) reuses the
    probabilities of rows whose tokens did not change since their last evaluation."""

    def __init__(self, inner: TokenDenoiser, cache: bool = True):
        super().__init__(inner)
        if not isinstance(cache, bool):
            raise TypeError(f"cache must be True or False, got {cache!r}")
        self.cache = cache and bool(inner.time_free)
        self.evals = int(getattr(inner, "evals_per_call", 1))  # network evaluations per call of inner
        self.calls = 0
        self.row_calls: Tensor | None = None
        self.skipped = 0  # rows served from the cache
        self._x: Tensor | None = None
        self._p: Tensor | None = None

    def __call__(self, x: Tensor, t: float | None = None) -> Tensor:
        b = x.shape[0]
        if self.row_calls is None or self.row_calls.shape[0] != b:
            self.row_calls = torch.zeros(b, dtype=torch.long)
            self._x = self._p = None
        if self.cache and self._x is not None and self._x.shape == x.shape:
            stale = (self._x != x).any(1)
            if not bool(stale.any()):
                self.skipped += b
                return self._p
            rows = stale.nonzero().squeeze(1)
            p = self._p.clone()
            p[rows] = self._checked(self.inner.probs(x[rows], t), x[rows])
            self.skipped += b - rows.numel()
            self.row_calls[rows.cpu()] += self.evals
        else:
            p = self._checked(self.inner.probs(x, t), x)
            self.row_calls += self.evals
        self.calls += self.evals
        if self.cache:
            self._x, self._p = x.clone(), p
        return p

    def _checked(self, p: Tensor, x: Tensor) -> Tensor:
        want = (*x.shape, self.vocab_size)
        if tuple(p.shape) != want:
            raise ValueError(f"{type(self.inner).__name__}.probs returned shape {tuple(p.shape)}; expected {want}")
        if p.dtype != torch.float64:
            p = p.double()
        return p
