"""Classifier-free guidance for masked (absorbing-state) discrete diffusion.

Given a conditional denoiser ``p_c(x0_i | x_t, c)`` and an unconditional one ``p_u(x0_i | x_t)``
over the same vocabulary, discrete CFG tilts each masked position's clean-token law
[Nisonoff et al. 2024, "Unlocking guidance for discrete state-space diffusion and flow models",
Sec. 4; LLaDA (Nie et al. 2025) Eq. 16 / Sec. B.3]:

    log p_w(v) = (1 + w) log p_c(v) - w log p_u(v)  + const,       renormalised per position,

i.e. ``p_w ∝ p_c^(1+w) / p_u^w``. ``w = 0`` is the conditional model (returned exactly, and the
unconditional model is then not evaluated); ``w > 0`` moves mass towards the tokens the
condition makes likelier than they are unconditionally. Unmasked positions stay one-hot.

Zeros: a token with ``p_c = 0`` keeps probability 0; a token with ``p_c > 0`` but ``p_u = 0``
gets ``log p_u`` clamped at ``log(tiny)`` (float64's smallest normal number, ``log`` = -708),
the finite limit of the formula, so it dominates its row when ``w > 0``.

Cost: two network evaluations per call (one per model; ``evals_per_call = 2``, 1 when
``w = 0``); the driver's counter (:class:`~diffsolve.discrete.counting.CountedTokenDenoiser`)
multiplies its call counts by it, so ``TokenResult.nfe`` counts network evaluations.

    >>> import torch
    >>> from diffsolve.discrete.chain import MarkovChain
    >>> cond = MarkovChain(torch.tensor([[0.9, 0.1], [0.5, 0.5]], dtype=torch.float64))
    >>> uncond = MarkovChain(torch.tensor([[0.5, 0.5], [0.5, 0.5]], dtype=torch.float64))
    >>> g = TokenCFG(cond, uncond, scale=1.0)
    >>> g.probs(torch.tensor([[0, 2]]))[0, 1].round(decimals=12).tolist()   # 0.9^2/0.5 : 0.1^2/0.5 = 81 : 1
    [0.987804878049, 0.012195121951]
    >>> g.evals_per_call
    2
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..checks import check_number
from .base import TokenDenoiser, TokenDenoiserWrapper

__all__ = ["TokenCFG"]

_LOG_TINY = float(torch.log(torch.tensor(torch.finfo(torch.float64).tiny, dtype=torch.float64)))


class TokenCFG(TokenDenoiserWrapper):
    """Classifier-free guidance of a conditional masked model by an unconditional one.

    Args:
        cond: the conditional :class:`TokenDenoiser` (the wrapped ``inner``: its ``vocab`` and
            every attribute not defined here are this model's).
        uncond: the unconditional one; same ``vocab_size`` (and the same ``vocab`` when both
            have one).
        scale: the guidance weight ``w >= 0`` (finite; 0 = the conditional model).

    ``max_len`` is the smaller of the two models'; the guided model is time-free when both are.
    """

    def __init__(self, cond: TokenDenoiser, uncond: TokenDenoiser, scale: float):
        if not isinstance(cond, TokenDenoiser):
            raise TypeError(f"TokenCFG: cond must be a TokenDenoiser, got {type(cond).__name__}")
        if not isinstance(uncond, TokenDenoiser):
            raise TypeError(f"TokenCFG: uncond must be a TokenDenoiser, got {type(uncond).__name__}")
        super().__init__(cond)
        if int(cond.vocab_size) != int(uncond.vocab_size):
            raise ValueError(f"TokenCFG: the models' vocabularies differ: cond has vocab_size {cond.vocab_size}, "
                             f"uncond has vocab_size {uncond.vocab_size}")
        if cond.vocab is not None and uncond.vocab is not None and cond.vocab != uncond.vocab:
            raise ValueError(f"TokenCFG: the models' vocabularies differ: cond has {cond.vocab!r}, "
                             f"uncond has {uncond.vocab!r}")
        self.uncond = uncond
        self.scale = check_number("TokenCFG", "scale", scale, 0.0)

    cond = property(lambda self: self.inner)
    time_free = property(lambda self: bool(self.inner.time_free) and bool(self.uncond.time_free))  # type: ignore

    @property
    def max_len(self) -> int | None:  # type: ignore[override]
        lens = [m for m in (self.inner.max_len, self.uncond.max_len) if m is not None]
        return min(lens) if lens else None

    @property
    def evals_per_call(self) -> int:
        """Network evaluations per :meth:`probs` call (2; 1 when ``scale == 0``)."""
        return 1 if self.scale == 0 else 2

    def _model_probs(self, model: TokenDenoiser, x: Tensor, t: float | None, name: str) -> Tensor:
        p = model.probs(x, t)
        want = (*x.shape, self.vocab_size)
        if tuple(p.shape) != want:
            raise ValueError(f"TokenCFG: {name} model {type(model).__name__}.probs returned shape "
                             f"{tuple(p.shape)}; expected {want}")
        return p.to(torch.float64)

    def probs(self, x: Tensor, t: float | None = None) -> Tensor:
        x = self.check_tokens(x, "x")
        pc = self._model_probs(self.inner, x, t, "cond")
        if self.scale == 0:
            return pc
        pu = self._model_probs(self.uncond, x, t, "uncond")
        w = self.scale
        logit = (1 + w) * torch.log(pc) - w * torch.log(pu).clamp_min(_LOG_TINY)  # -inf where p_c = 0
        p = torch.softmax(logit, dim=-1)
        return self.keep_unmasked(x, p)

    def __repr__(self) -> str:
        return f"TokenCFG(scale={self.scale}, cond={self.inner!r}, uncond={self.uncond!r})"
