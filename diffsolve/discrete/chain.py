"""An exact discrete model: a first-order (bigram) Markov chain over ``V`` tokens whose clean-token
conditionals given any set of unmasked tokens are computed in closed form.

A masked-diffusion sampler only ever asks its denoiser for ``p(x0_k = c | x_U)``, the law of a
masked position ``k`` given the unmasked tokens ``x_U``. For a Markov chain with transition matrix
``P`` and initial law ``mu`` this is exact and cheap ("exact conditionals of a Markov chain given the
unmasked tokens"): by the Markov property, given the nearest unmasked token ``a = x_i`` on the left
(``i < k``) and ``b = x_j`` on the right (``j > k``), position ``k`` is independent of every other
unmasked token, so

    p(x_k = c | x_U) = p(x_k = c | x_i = a, x_j = b)
                     ∝ [P^(k-i)]_{a,c} * [P^(j-k)]_{c,b},

with ``[P^(k-i)]_{a,c}`` replaced by the marginal ``(mu P^k)_c`` when nothing on the left is
unmasked, and ``[P^(j-k)]_{c,b}`` by 1 when nothing on the right is. (Proof: the joint law factors
as ``mu(x_1) prod_t P(x_t, x_t+1)``; summing out the masked positions between two unmasked ones
gives matrix powers, and every factor not involving the stretch ``i..j`` cancels in the
normalisation.) So a sampler's output can be compared with the true data law exactly: this is
the discrete engine's ground truth, as the Gaussian-mixture models are the continuous one's.

    >>> import torch
    >>> P = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5]], dtype=torch.float64)
    >>> chain = MarkovChain(P)                     # initial law: the stationary one, (1/3, 1/3, 1/3)
    >>> [round(v, 12) for v in chain.initial.tolist()]
    [0.333333333333, 0.333333333333, 0.333333333333]
    >>> m = chain.mask_id                          # 3
    >>> chain.probs(torch.tensor([[m, 1, m, 2]]))[0].round(decimals=12).tolist()
    [[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]]
    >>> x = chain.sample(2, 5, seeds=[0, 1])
    >>> x.shape, bool((x == chain.sample(1, 5, seeds=[1])[0]).all(1)[1])
    (torch.Size([2, 5]), True)
    >>> round(chain.entropy_rate(), 6)             # log 2: every row has two equally likely moves
    0.693147
    >>> round(chain.sequence_entropy(4), 6)        # log 3 + 3 log 2
    3.178054

:meth:`MarkovChain.shakespeare` is the chain fitted to the training plays (72 characters);
:meth:`MarkovChain.bias` measures how far a set of samples is from the chain's own law.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ..noise import NoiseSource
from .base import TokenDenoiser

__all__ = ["MarkovChain", "bigram_counts"]

#: how far a row of the transition matrix (or the initial law) may be from summing to 1
ROW_TOL = 1e-9


def _as_float64(value, name: str) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach().to("cpu", torch.float64)
    try:
        return torch.as_tensor(np.asarray(value, dtype=np.float64))
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a tensor of probabilities, got {type(value).__name__}") from e


def _check_law(p: Tensor, name: str) -> None:
    """``p`` (..., V): finite, non-negative, each row summing to 1 within ROW_TOL; a bad entry is named."""
    if not bool(torch.isfinite(p).all()):
        idx = tuple(torch.nonzero(~torch.isfinite(p))[0].tolist())
        raise ValueError(f"{name}{list(idx)} = {p[idx].item()} is not finite")
    if bool((p < 0).any()):
        idx = tuple(torch.nonzero(p < 0)[0].tolist())
        raise ValueError(f"{name}{list(idx)} = {p[idx].item()!r} is negative; probabilities must be >= 0")
    err = (p.sum(-1) - 1).abs()
    if bool((err > ROW_TOL).any()):
        if p.ndim == 1:
            raise ValueError(f"{name} sums to {p.sum().item()!r}, not 1 (tolerance {ROW_TOL})")
        r = int(torch.argmax(err))
        raise ValueError(f"row {r} of {name} sums to {p[r].sum().item()!r}, not 1 (tolerance {ROW_TOL})")


def stationary(transition: Tensor) -> Tensor:
    """The stationary law ``pi = pi P`` of a row-stochastic ``P`` (float64), by a linear solve:
    the equations ``(P^T - I) pi = 0`` with one of them (redundant: they sum to 0) replaced by
    ``sum(pi) = 1``. A chain without a unique stationary law (several closed classes) is refused."""
    P = transition.to(torch.float64)
    V = P.shape[0]
    A = P.T - torch.eye(V, dtype=torch.float64)
    A[-1] = 1.0
    rhs = torch.zeros(V, dtype=torch.float64)
    rhs[-1] = 1.0
    err = "the chain has no unique stationary law (it has several closed classes); pass an initial law"
    try:
        pi = torch.linalg.solve(A, rhs)
    except RuntimeError as e:  # singular: reducible with several closed classes
        raise ValueError(err) from e
    if not bool(torch.isfinite(pi).all()) or float((pi @ P - pi).abs().max()) > 1e-10 or float(pi.min()) < -1e-10:
        raise ValueError(err)
    pi = pi.clamp_min(0)
    return pi / pi.sum()


def bigram_counts(text: str, vocab: str) -> Tensor:
    """(V, V) float64 counts of the character bigrams ``text[t], text[t+1]`` (row: first character);
    a character of ``text`` outside ``vocab`` is named. Vectorised (4 M characters in ~0.2 s)."""
    if len(set(vocab)) != len(vocab):
        dup = sorted({c for c in vocab if vocab.count(c) > 1})
        raise ValueError(f"vocab has repeated characters {dup[:10]!r}")
    V = len(vocab)
    codes = np.frombuffer(vocab.encode("utf-32-le"), dtype=np.uint32)
    order = np.argsort(codes)
    cp = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    pos = np.searchsorted(codes[order], cp).clip(max=V - 1) if V else np.zeros(len(cp), dtype=np.int64)
    ok = codes[order][pos] == cp if V else np.zeros(len(cp), dtype=bool)
    if not ok.all():
        bad = sorted({chr(c) for c in cp[~ok]})
        raise ValueError(f"characters {bad[:10]!r} are not in the vocabulary ({V} characters: {vocab!r})")
    ids = order[pos].astype(np.int64)
    counts = np.bincount(ids[:-1] * V + ids[1:], minlength=V * V).reshape(V, V) if len(ids) > 1 \
        else np.zeros((V, V), dtype=np.int64)
    return torch.as_tensor(counts.astype(np.float64))


class MarkovChain(TokenDenoiser):
    """A first-order Markov chain over ``V`` tokens as an exact :class:`TokenDenoiser`.

    ``transition`` (V, V) row-stochastic (``P[a, b] = p(x_t+1 = b | x_t = a)``); ``initial`` (V,)
    the law of the first token (None: the stationary law of ``P``, solved exactly in float64);
    ``vocab`` a str of V characters for a text chain; ``max_len`` the longest sequence accepted
    (None: any). Zero transitions are allowed: the conditionals stay exact for every set of unmasked
    tokens of positive probability, and :meth:`probs` refuses a masked position whose context has
    probability 0 (naming it) instead of returning 0/0.

    The closed form of :meth:`probs` (see the module docstring)::

        p(x_k = c | x_U) ∝ [ (mu P^k)_c  or  (P^(k-i))_{a,c} ] * [ 1  or  (P^(j-k))_{c,b} ]

    uses the powers ``P^0, P^1, ...`` (float64, computed once, up to the longest gap seen) and
    the marginals ``mu P^k``; it is one gather per side over the batch and positions.
    """

    def __init__(self, transition: Tensor, initial: Tensor | None = None, vocab: str | None = None,
                 max_len: int | None = None):
        P = _as_float64(transition, "transition")
        if P.ndim != 2 or P.shape[0] != P.shape[1] or P.shape[0] < 1:
            raise ValueError(f"transition must be a square (V, V) matrix with V >= 1, got shape {tuple(P.shape)}")
        _check_law(P, "transition")
        V = P.shape[0]
        self.vocab_size = V
        self.transition = P
        if initial is None:
            self._stationary: Tensor | None = stationary(P)
            mu = self._stationary.clone()
        else:
            mu = _as_float64(initial, "initial")
            if tuple(mu.shape) != (V,):
                raise ValueError(f"initial must have shape ({V},) like the transition matrix, got {tuple(mu.shape)}")
            _check_law(mu, "initial")
            self._stationary = None
        self.initial = mu
        if vocab is not None:
            if not isinstance(vocab, str):
                raise TypeError(f"vocab must be a str of {V} characters, got {type(vocab).__name__}")
            if len(vocab) != V:
                raise ValueError(f"vocab has {len(vocab)} characters but the transition matrix has V = {V}")
            if len(set(vocab)) != V:
                dup = sorted({c for c in vocab if vocab.count(c) > 1})
                raise ValueError(f"vocab has repeated characters {dup[:10]!r}")
        self.vocab = vocab
        if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1):
            raise ValueError(f"max_len must be a positive int or None, got {max_len!r}")
        self.max_len = max_len
        self._powers = torch.eye(V, dtype=torch.float64)[None]  # P^0 ... P^n, (n+1, V, V)
        self._marginals = mu[None].clone()                      # mu P^0 ... mu P^n, (n+1, V)
        self._powers_t: Tensor | None = None
        self._cdf: Tensor | None = None

    def __repr__(self) -> str:
        return f"MarkovChain(V={self.vocab_size}, max_len={self.max_len})"

    # ------------------------------------------------------------------ construction
    @classmethod
    def fit(cls, text: str, vocab: str, smoothing: float = 0.0, max_len: int | None = None) -> "MarkovChain":
        """The maximum-likelihood bigram chain of ``text`` over the characters ``vocab``:
        ``P[a, b] ∝ count(a b) + smoothing``; a row with no counts (and smoothing 0) is uniform;
        the initial law is the chain's stationary one."""
        if not isinstance(smoothing, (int, float)) or isinstance(smoothing, bool) or not math.isfinite(smoothing) \
                or smoothing < 0:
            raise ValueError(f"smoothing must be a finite number >= 0, got {smoothing!r}")
        counts = bigram_counts(text, vocab) + float(smoothing)
        rows = counts.sum(1, keepdim=True)
        V = len(vocab)
        P = torch.where(rows > 0, counts / rows.clamp_min(1e-300), torch.full_like(counts, 1.0 / V))
        return cls(P, None, vocab=vocab, max_len=max_len)

    @classmethod
    def shakespeare(cls, max_len: int | None = 256, smoothing: float = 0.01) -> "MarkovChain":
        """The chain fitted to ``shakespeare("train")`` over ``vocabulary()`` (72 characters), cached.

        ``smoothing`` 0.01 (a hundredth of a count per cell, 0.72 per row against thousands to
        millions of counts) makes every transition positive without visibly changing the fitted
        rows, so every sequence has positive probability and any sampler's partial sequences
        are valid contexts; ``smoothing=0`` (two thirds of the bigrams never occur) is exact too.
        The first call reads the plays (a few seconds, the corpus parse); the fit itself takes
        ~0.2 s; later calls return the same object."""
        return _shakespeare_chain(max_len, float(smoothing))

    # ------------------------------------------------------------------ tables
    def _ensure(self, n: int) -> None:
        """Powers and marginals up to P^n (grown geometrically, each power one float64 matmul)."""
        have = self._powers.shape[0] - 1
        if n <= have:
            return
        target = max(n, 2 * have, 16)
        if self.max_len is not None:
            target = max(n, min(target, self.max_len))
        pw = [self._powers[-1]]
        for _ in range(target - have):
            pw.append(pw[-1] @ self.transition)
        new = torch.stack(pw[1:])
        self._powers = torch.cat([self._powers, new])
        self._marginals = torch.cat([self._marginals, self.initial @ new])
        self._powers_t = None

    def powers(self, n: int) -> Tensor:
        """(n+1, V, V) float64: ``P^0, ..., P^n``."""
        self._ensure(n)
        return self._powers[: n + 1]

    def marginals(self, length: int) -> Tensor:
        """(length, V) float64: the law ``mu P^k`` of the token at position k = 0 .. length-1."""
        self._ensure(max(length - 1, 0))
        return self._marginals[:length]

    def stationary(self) -> Tensor:
        """The stationary law of the transition matrix (= ``initial`` when that was None)."""
        if self._stationary is None:
            self._stationary = stationary(self.transition)
        return self._stationary

    # ------------------------------------------------------------------ denoiser
    def probs(self, x: Tensor, t: float | None = None) -> Tensor:
        """(B, L, V) float64 exact ``p(x0_k = c | unmasked tokens of x)`` (``t`` is ignored:
        time-free); one-hot rows at unmasked positions."""
        x = self.check_tokens(x)
        B, L = x.shape
        V, device = self.vocab_size, x.device
        if L == 0:
            return torch.zeros(B, 0, V, dtype=torch.float64, device=device)
        self._ensure(L)
        if self._powers_t is None:
            self._powers_t = self._powers.transpose(1, 2).contiguous()
        powers, powers_t, marg = self._powers, self._powers_t, self._marginals
        if powers.device != device:
            powers, powers_t, marg = powers.to(device), powers_t.to(device), marg.to(device)
        masked = x == self.mask_id
        pos = torch.arange(L, device=device).expand(B, L)
        left = torch.where(masked, torch.full_like(pos, -1), pos).cummax(1).values        # nearest unmasked <= k
        right = torch.where(masked, torch.full_like(pos, L), pos).flip(1).cummin(1).values.flip(1)  # >= k
        has_left, has_right = left >= 0, right < L
        tok = x.clamp_max(V - 1)
        a = tok.gather(1, left.clamp_min(0))
        b = tok.gather(1, right.clamp_max(L - 1))
        lf = torch.where(has_left[..., None], powers[(pos - left).clamp(0, L), a], marg[pos])
        rf = powers_t[(right - pos).clamp(0, L), b]
        p = torch.where(has_right[..., None], lf * rf, lf)
        z = p.sum(-1, keepdim=True)
        bad = masked & ~(z[..., 0] > 0)
        if bool(bad.any()):
            r, k = (int(v) for v in torch.nonzero(bad)[0])
            raise ValueError(f"x[{r}] has probability 0 under the chain around masked position {k} (nearest unmasked "
                             f"tokens: {int(a[r, k]) if has_left[r, k] else None} at {int(left[r, k])}, "
                             f"{int(b[r, k]) if has_right[r, k] else None} at {int(right[r, k])}); its conditional "
                             f"is undefined")
        p = p / torch.where(masked[..., None], z, torch.ones_like(z))
        return self.keep_unmasked(x, p)

    # ------------------------------------------------------------------ exact sampling and likelihood
    def _cdfs(self) -> Tensor:
        """(V+1, V) inverse-CDF tables: rows 0..V-1 of P, row V the initial law; each row is 1.0
        exactly from its last positive entry on, so a uniform in (0, 1) never lands on a
        zero-probability token (rounding of the cumulative sum included)."""
        if self._cdf is None:
            laws = torch.cat([self.transition, self.initial[None]])
            cdf = laws.cumsum(1)
            V = self.vocab_size
            last = V - 1 - (laws > 0).flip(1).to(torch.int64).argmax(1)
            cdf[torch.arange(V, dtype=torch.int64)[None] >= last[:, None]] = 1.0
            self._cdf = cdf
        return self._cdf

    def sample(self, num: int, length: int, seeds: Sequence[int] | Tensor | None = None) -> Tensor:
        """(num, length) long exact forward samples: float64 inverse-CDF draws with the uniforms
        of ``NoiseSource(seeds)`` (``seeds`` default ``range(num)``), so row b depends only on
        ``seeds[b]`` (and a shorter sample is a prefix of a longer one with the same seed)."""
        if isinstance(num, bool) or not isinstance(num, int) or num < 0:
            raise ValueError(f"num must be an int >= 0, got {num!r}")
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise ValueError(f"length must be an int >= 0, got {length!r}")
        if self.max_len is not None and length > self.max_len:
            raise ValueError(f"length {length} exceeds this model's max_len {self.max_len}")
        seeds = list(range(num)) if seeds is None else seeds
        src = NoiseSource(seeds)
        if len(src) != num:
            raise ValueError(f"{len(src)} seeds for {num} samples")
        out = torch.empty(num, length, dtype=torch.long)
        if num == 0 or length == 0:
            return out
        u = src.uniform(0, (length,)).T.contiguous()  # (length, num)
        cdf = self._cdfs()
        prev = torch.full((num,), self.vocab_size, dtype=torch.long)  # row V: the initial law
        for k in range(length):
            prev = torch.searchsorted(cdf[prev], u[k].unsqueeze(1), right=True)[:, 0].clamp_max(self.vocab_size - 1)
            out[:, k] = prev
        return out

    def _check_clean(self, x: Tensor, name: str) -> Tensor:
        x = self.check_tokens(x, name)
        if bool((x == self.mask_id).any()):
            r, k = (int(v) for v in torch.nonzero(x == self.mask_id)[0])
            raise ValueError(f"{name}[{r}, {k}] is the mask id {self.mask_id}; {name} must be fully unmasked "
                             f"sequences (ids 0..{self.vocab_size - 1})")
        return x

    def log_prob(self, x: Tensor) -> Tensor:
        """(B,) float64 exact log-likelihood ``log mu(x_0) + sum_t log P(x_t, x_t+1)`` of full
        sequences (-inf for an impossible one); a masked token is refused."""
        x = self._check_clean(x, "x")
        B, L = x.shape
        if L == 0:
            return torch.zeros(B, dtype=torch.float64)
        x = x.cpu()
        lp = torch.log(self.initial[x[:, 0]])
        if L > 1:
            lp = lp + torch.log(self.transition[x[:, :-1], x[:, 1:]]).sum(1)
        return lp

    # ------------------------------------------------------------------ entropies
    def _row_entropies(self) -> Tensor:
        """(V,) ``h(a) = -sum_b P_ab log P_ab`` (0 log 0 = 0)."""
        return -torch.special.xlogy(self.transition, self.transition).sum(1)

    def entropy_rate(self) -> float:
        """Nats per token under stationarity: ``-sum_a pi_a sum_b P_ab log P_ab``."""
        return float(self.stationary() @ self._row_entropies())

    def sequence_entropy(self, length: int) -> float:
        """Exact entropy (nats) of a length-``length`` sequence: ``H(mu) + sum_{k=0}^{L-2} (mu P^k) @ h``
        with ``h`` the row entropies; ``H(pi) + (L-1) * entropy_rate`` for a stationary start."""
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise ValueError(f"length must be an int >= 0, got {length!r}")
        if length == 0:
            return 0.0
        h0 = float(-torch.special.xlogy(self.initial, self.initial).sum())
        if length == 1:
            return h0
        return h0 + float((self.marginals(length - 1) @ self._row_entropies()).sum())

    # ------------------------------------------------------------------ bias of a set of samples
    def expected_bigrams(self, length: int) -> Tensor:
        """(V, V) the exact law of the bigram ``(x_k, x_k+1)`` averaged over k = 0 .. length-2
        (``pi_a P_ab`` for a stationary start)."""
        m = self.marginals(length - 1).mean(0)
        return m[:, None] * self.transition

    def bigram_kl(self, samples: Tensor) -> float:
        """KL(empirical bigram law of ``samples`` || the chain's exact bigram law, averaged over
        positions) in nats: 0 log 0 = 0, +inf when a sample holds a bigram of probability 0."""
        x = self._check_clean(samples, "samples")
        if x.shape[1] < 2 or x.shape[0] == 0:
            raise ValueError(f"samples of shape {tuple(x.shape)} hold no bigram (need length >= 2)")
        V = self.vocab_size
        counts = torch.bincount((x[:, :-1] * V + x[:, 1:]).reshape(-1).cpu(), minlength=V * V).to(torch.float64)
        return _kl(counts / counts.sum(), self.expected_bigrams(x.shape[1]).reshape(-1))

    def bias(self, samples: Tensor) -> dict[str, float]:
        """How far ``samples`` (n, L) are from the chain's law; for exact samples (``sample``)
        every measure is at its noise level:

        * ``nll_minus_entropy``: mean per-token ``-log_prob(x) / L`` minus ``sequence_entropy(L) / L``
          (nats per token). Exact samples: mean 0, standard error ``nll_minus_entropy_se`` (the
          samples' std / sqrt(n)). For samples from another law q it is
          ``(KL(q || p) + H(q) - H(p)) / L``: positive when they are less likely than the chain's
          own (errors, too diverse), negative when too likely (mode seeking, "low temperature").
        * ``bigram_kl``: :meth:`bigram_kl`; ``unigram_kl`` the same for single tokens (vs the
          positions' average marginal). Both are >= 0 and biased upward by sampling noise:
          for N independent draws over K outcomes, E[KL] ≈ (K - 1) / (2N), given as
          ``bigram_kl_noise`` / ``unigram_kl_noise`` (N = the number of bigrams / tokens). It is
          a scale, not a bound: the positions inside one sequence are correlated, and outcomes
          with expected counts far below 1 add less than 1/(2N) each (e.g. 256 exact Shakespeare
          samples of length 256: bigram KL ~0.011 against a noise scale of 0.040). Compare KLs
          at the same n and L; one well above an exact sampler's is bias.
        """
        x = self._check_clean(samples, "samples")
        n, L = x.shape
        if n < 2 or L < 2:
            raise ValueError(f"bias needs at least 2 samples of length >= 2, got shape {tuple(x.shape)}")
        V = self.vocab_size
        gap = -self.log_prob(x) / L - self.sequence_entropy(L) / L
        uni = torch.bincount(x.reshape(-1).cpu(), minlength=V).to(torch.float64)
        marg = self.marginals(L).mean(0)
        bigram_support = int((self.expected_bigrams(L) > 0).sum())
        return {
            "nll_minus_entropy": float(gap.mean()),
            "nll_minus_entropy_se": float(gap.std() / math.sqrt(n)),
            "bigram_kl": self.bigram_kl(x),
            "bigram_kl_noise": (bigram_support - 1) / (2 * n * (L - 1)),
            "unigram_kl": _kl(uni / uni.sum(), marg),
            "unigram_kl_noise": (int((marg > 0).sum()) - 1) / (2 * n * L),
            "num_samples": n,
            "length": L,
        }


def _kl(p: Tensor, q: Tensor) -> float:
    """KL(p || q) with 0 log 0 = 0 and +inf where p > 0 = q."""
    if bool(((p > 0) & (q <= 0)).any()):
        return math.inf
    s = p > 0
    return float((p[s] * (p[s].log() - q[s].log())).sum())


@lru_cache(maxsize=8)
def _shakespeare_chain(max_len: int | None, smoothing: float) -> MarkovChain:
    from .corpus import shakespeare, vocabulary
    return MarkovChain.fit(shakespeare("train"), vocabulary(), smoothing=smoothing, max_len=max_len)
