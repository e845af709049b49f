"""The discrete engine's denoiser: clean-token probabilities of a partly masked sequence.

An absorbing-state (masked) diffusion model over a vocabulary of ``V`` tokens adds one token,
the mask (id ``mask_id = V``). Its "denoiser" is the clean-data conditional of every position
given the sequence so far [MDLM Sec. 3; RADD Thm. 1]:

    probs(x)[b, i, v] = p(x0_i = v | the unmasked tokens of x[b])      (float64, rows sum to 1)

For an unmasked position the row is the one-hot of its token. A time-free model (RADD: the
conditional does not depend on t once the masked set is known) is called once per distinct
masked sequence, so a sampler may skip a call when nothing changed; every model here is
time-free (``time_free = True``); a model whose output depends on t sets it False and
takes ``t``.

:class:`TokenDenoiserWrapper` is the base of wrappers (counting, caching, guidance): it forwards
every attribute it does not define to the wrapped denoiser.

    >>> import torch
    >>> class Uniform(TokenDenoiser):
    ...     vocab_size = 3
    ...     def probs(self, x, t=None):
    ...         return self.keep_unmasked(x, torch.full((*x.shape, 3), 1 / 3, dtype=torch.float64))
    >>> d = Uniform()
    >>> d.probs(torch.tensor([[0, 3, 2]]))[0, :, :].tolist()
    [[1.0, 0.0, 0.0], [0.3333333333333333, 0.3333333333333333, 0.3333333333333333], [0.0, 0.0, 1.0]]
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["TokenDenoiser", "TokenDenoiserWrapper", "check_token_ids"]


def check_token_ids(x: Any, name: str, high: int, max_len: int | None, what: str) -> Tensor:
    """``x`` as a (B, L) long tensor of ids in [0, high] with L <= max_len; anything else is
    refused naming ``name`` and ``what`` the ids mean."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a (batch, length) integer tensor, got {type(x).__name__}")
    if x.ndim != 2 or x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
        raise ValueError(f"{name} must be a (batch, length) integer tensor, got shape {tuple(x.shape)} "
                         f"dtype {x.dtype}")
    if max_len is not None and x.shape[1] > max_len:
        raise ValueError(f"{name} has length {x.shape[1]}; this model takes at most {max_len}")
    if x.numel() and (int(x.min()) < 0 or int(x.max()) > high):
        raise ValueError(f"{name} holds ids outside [0, {high}] ({what}): min {int(x.min())}, max {int(x.max())}")
    return x.long()


class TokenDenoiser:
    """Base of the discrete models: ``probs(x, t=None) -> (B, L, V)`` float64 clean-token
    probabilities for tokens ``x`` (B, L) long, ``mask_id`` (= ``vocab_size``) at masked places.

    Attributes: ``vocab_size`` V; ``mask_id`` (V); ``max_len`` (the longest sequence, or None);
    ``time_free`` (True: ``t`` is ignored); ``vocab`` (a str of V characters for text models,
    else None)."""

    vocab_size: int = 0
    max_len: int | None = None
    time_free: bool = True
    vocab: str | None = None

    @property
    def mask_id(self) -> int:
        return int(self.vocab_size)

    def probs(self, x: Tensor, t: float | None = None) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def keep_unmasked(self, x: Tensor, p: Tensor) -> Tensor:
        """``p`` with the rows of unmasked positions replaced by the one-hot of their token."""
        unmasked = x != self.mask_id
        if bool(unmasked.any()):
            onehot = torch.nn.functional.one_hot(x.clamp_max(self.vocab_size - 1), self.vocab_size).to(p.dtype)
            p = torch.where(unmasked[..., None], onehot, p)
        return p

    def check_tokens(self, x: Tensor, name: str = "tokens") -> Tensor:
        """``x`` as a (B, L) long tensor of ids in [0, V] (V = the mask); a bad one is named."""
        return check_token_ids(x, name, self.mask_id, self.max_len,
                               f"0..{self.vocab_size - 1} tokens, {self.mask_id} the mask")

    def encode(self, text: str) -> Tensor:
        """Token ids (1-D long) of ``text`` for a text model; a character outside the vocabulary is named."""
        if self.vocab is None:
            raise TypeError(f"{type(self).__name__} has no character vocabulary")
        index = {c: i for i, c in enumerate(self.vocab)}
        bad = sorted(set(text) - set(index))
        if bad:
            raise ValueError(f"characters {bad[:10]!r} are not in the model's vocabulary "
                             f"({len(self.vocab)} characters: {self.vocab!r})")
        return torch.tensor([index[c] for c in text], dtype=torch.long)

    def decode(self, tokens: Tensor, mask_char: str = "_") -> str:
        """The text of a 1-D id tensor (masked positions shown as ``mask_char``)."""
        if self.vocab is None:
            raise TypeError(f"{type(self).__name__} has no character vocabulary")
        return "".join(self.vocab[i] if i < self.vocab_size else mask_char for i in tokens.tolist())


class TokenDenoiserWrapper(TokenDenoiser):
    """A wrapper around a :class:`TokenDenoiser`: everything it does not define is the inner
    model's (``vocab_size``, ``max_len``, ``vocab``, ``time_free``, ...)."""

    def __init__(self, inner: TokenDenoiser):
        if not isinstance(inner, TokenDenoiser):
            raise TypeError(f"inner must be a TokenDenoiser, got {type(inner).__name__}")
        self.inner = inner

    vocab_size = property(lambda self: self.inner.vocab_size)  # type: ignore[assignment]
    max_len = property(lambda self: self.inner.max_len)  # type: ignore[assignment]
    time_free = property(lambda self: self.inner.time_free)  # type: ignore[assignment]
    vocab = property(lambda self: self.inner.vocab)  # type: ignore[assignment]

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (during unpickling)
            raise AttributeError(name)
        return getattr(self.inner, name)

    def probs(self, x: Tensor, t: float | None = None) -> Tensor:
        return self.inner.probs(x, t)
