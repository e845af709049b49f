"""Text sample quality: generative NLL under a reference AR model, unigram entropy, distinct
n-grams and n-gram KL to real text, side by side for samples and for real text windows.

Every function takes token ids as a (N, L) integer tensor (N samples; a 1-D tensor is one
sample), or text: one string or a list of strings (characters are compared as they are).
N-grams never cross a sample's boundary; counts are pooled over the samples.

    >>> distinct_ngrams("abab", 2)          # ab, ba, ab: 2 distinct of 3
    0.6666666666666666
    >>> round(unigram_entropy(torch.tensor([[0, 1, 2, 3]]), 4), 6) == round(math.log(4), 6)
    True
    >>> ngram_kl(["abab"], ["abab"], 1)
    0.0
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Sequence

import torch
from torch import Tensor

__all__ = ["generative_nll", "unigram_entropy", "distinct_ngrams", "ngram_kl", "text_report"]


def _rows(tokens: Any, name: str = "tokens") -> list[Tensor]:
    """The samples as 1-D long tensors (a string's characters as code points)."""
    if isinstance(tokens, str):
        tokens = [tokens]
    if isinstance(tokens, Tensor):
        if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
            raise ValueError(f"{name} must be integer token ids, got dtype {tokens.dtype}")
        if tokens.ndim == 1:
            tokens = tokens[None]
        if tokens.ndim != 2:
            raise ValueError(f"{name} must be (samples, length) token ids, got shape {tuple(tokens.shape)}")
        if tokens.numel() and int(tokens.min()) < 0:
            raise ValueError(f"{name} holds negative ids (min {int(tokens.min())})")
        return list(tokens.detach().long().cpu().unbind(0))
    if isinstance(tokens, (list, tuple)) and all(isinstance(s, str) for s in tokens):
        return [torch.tensor([ord(c) for c in s], dtype=torch.long) for s in tokens]
    raise TypeError(f"{name} must be a (samples, length) integer tensor, a string or a list of strings, "
                    f"got {type(tokens).__name__}")


def _check_n(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    return int(n)


def _ngrams(rows: list[Tensor], n: int) -> Tensor:
    """(K, n) all n-grams of the rows (none crossing a row boundary)."""
    grams = [r.unfold(0, n, 1) for r in rows if len(r) >= n]
    return torch.cat(grams) if grams else torch.zeros(0, n, dtype=torch.long)


def generative_nll(ar_model: Any, tokens: Any) -> dict[str, float]:
    """The reference AR model's negative log-likelihood of the samples, nats per character:
    ``nll`` (mean over samples of each sample's per-character NLL), ``nll_se`` (its standard
    error over samples; 0 for one sample) and ``ppl`` (``exp(nll)``, the per-character
    perplexity). Strings are encoded with the model's vocabulary; samples of unequal length are
    scored one by one.

    >>> from diffsolve.nets.transformer import CharTransformer
    >>> from diffsolve.discrete.models import ARTextModel
    >>> torch.manual_seed(0) and None
    >>> ar = ARTextModel(CharTransformer(2, dim=8, depth=1, heads=2, max_len=4, causal=True), "ab")
    >>> r = generative_nll(ar, ["abab", "bbba"])
    >>> sorted(r), abs(r["ppl"] - math.exp(r["nll"])) < 1e-12
    (['nll', 'nll_se', 'ppl'], True)
    """
    if isinstance(tokens, str):
        tokens = [tokens]
    if isinstance(tokens, (list, tuple)) and all(isinstance(s, str) for s in tokens):
        rows = [ar_model.encode(s) for s in tokens]
    else:
        rows = _rows(tokens)
    if not rows:
        raise ValueError("generative_nll needs at least one sample")
    if any(len(r) == 0 for r in rows):
        raise ValueError("a sample has length 0; the NLL per character needs at least one character")
    if len({len(r) for r in rows}) == 1:
        per = ar_model.nll_per_char(torch.stack(rows))
    else:
        per = torch.cat([ar_model.nll_per_char(r[None]) for r in rows])
    per = per.double().cpu()
    nll = float(per.mean())
    se = float(per.std(unbiased=True) / math.sqrt(len(per))) if len(per) > 1 else 0.0
    return {"nll": nll, "nll_se": se, "ppl": math.exp(nll)}


def unigram_entropy(tokens: Any, vocab_size: int | None = None) -> float:
    """Entropy (nats) of the pooled character histogram of the samples; ``vocab_size``, when
    given, checks that ids lie in [0, vocab_size) (the entropy does not depend on it).

    >>> round(unigram_entropy("abcabc"), 12) == round(math.log(3), 12)
    True
    >>> unigram_entropy(torch.tensor([[1, 1, 1]]), 5)
    0.0
    """
    rows = _rows(tokens)
    flat = torch.cat(rows) if rows else torch.zeros(0, dtype=torch.long)
    if flat.numel() == 0:
        raise ValueError("unigram_entropy needs at least one token")
    if vocab_size is not None:
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, numbers.Integral) or vocab_size < 1:
            raise ValueError(f"vocab_size must be a positive integer, got {vocab_size!r}")
        if int(flat.max()) >= vocab_size:
            raise ValueError(f"tokens hold id {int(flat.max())} >= vocab_size {vocab_size} (a mask left in a sample?)")
    _, counts = torch.unique(flat, return_counts=True)
    p = counts.double() / flat.numel()
    return float(-(p * p.log()).sum()) + 0.0  # + 0.0: no -0.0


def distinct_ngrams(tokens: Any, n: int) -> float:
    """dist-n: the number of distinct n-grams divided by the number of n-grams, pooled over the
    samples (Li et al. 2016); 1 = no n-gram repeats, small = repetitive text.

    >>> distinct_ngrams("abab", 1), distinct_ngrams(["abab", "abab"], 2)
    (0.5, 0.3333333333333333)
    """
    n = _check_n(n)
    grams = _ngrams(_rows(tokens), n)
    if len(grams) == 0:
        raise ValueError(f"no sample is long enough to hold a {n}-gram")
    return torch.unique(grams, dim=0).shape[0] / grams.shape[0]


def ngram_kl(samples: Any, reference: Any, n: int, eps: float = 0.1) -> float:
    """``KL(P || Q)`` in nats between the empirical n-gram distributions of ``samples`` (P) and
    ``reference`` (Q), each smoothed by adding ``eps`` to the count of every n-gram seen in
    either (``p(g) = (c(g) + eps) / (N + eps * |U|)``, U the union of the n-grams seen). Large
    when the samples use n-grams that real text rarely or never uses. Like every plug-in KL it
    is biased upward for few n-grams: compare values computed at equal sizes.

    >>> round(ngram_kl("aaab", "abbb", 1, eps=0.0), 6) == round(0.75 * math.log(3) + 0.25 * math.log(1 / 3), 6)
    True
    """
    n = _check_n(n)
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    a, b = _ngrams(_rows(samples, "samples"), n), _ngrams(_rows(reference, "reference"), n)
    if len(a) == 0 or len(b) == 0:
        raise ValueError(f"{'samples' if len(a) == 0 else 'reference'} hold no {n}-gram")
    _, inv = torch.unique(torch.cat([a, b]), dim=0, return_inverse=True)
    k = int(inv.max()) + 1
    ca = torch.bincount(inv[: len(a)], minlength=k).double() + eps
    cb = torch.bincount(inv[len(a):], minlength=k).double() + eps
    p, q = ca / ca.sum(), cb / cb.sum()
    pos = p > 0
    if bool((q[pos] == 0).any()):
        return math.inf
    return max(float((p[pos] * (p[pos] / q[pos]).log()).sum()), 0.0)


def _rows_for(tokens: Any, ar_model: Any, name: str) -> list[Tensor]:
    """:func:`_rows`, but text is encoded with ``ar_model``'s vocabulary when there is one."""
    if ar_model is not None and (isinstance(tokens, str) or (
            isinstance(tokens, (list, tuple)) and all(isinstance(t, str) for t in tokens))):
        return [ar_model.encode(t) for t in ([tokens] if isinstance(tokens, str) else tokens)]
    return _rows(tokens, name)


def _row_stats(x: list[Tensor], target: list[Tensor], vocab_size: int, ar_model: Any, distinct_n: Sequence[int],
               kl_n: Sequence[int], eps: float) -> dict[str, float]:
    out: dict[str, float] = {"unigram_entropy": unigram_entropy(_stack(x), vocab_size)}
    for n in distinct_n:
        out[f"distinct_{n}"] = distinct_ngrams(_stack(x), n)
    for n in kl_n:
        out[f"kl_{n}"] = ngram_kl(_stack(x), _stack(target), n, eps)
    if ar_model is not None:
        out.update(generative_nll(ar_model, _stack(x)))
    return out


def _stack(rows: list[Tensor]) -> Tensor:
    return torch.stack(rows)


def text_report(samples_tokens: Any, reference_tokens: Any, ar_model: Any = None, *,
                distinct_n: Sequence[int] = (2, 3, 4), kl_n: Sequence[int] = (1, 2, 3),
                eps: float = 0.1) -> dict[str, Any]:
    """All the text metrics for the samples and, computed the same way, for real text.

    ``samples_tokens``: (N, L) ids; ``reference_tokens``: (M, L) ids of real held-out text
    windows of the same length, M >= 2N. The first N reference windows form the ``reference``
    row (same size as the samples, so dist-n and the NLL compare); the other M - N are the
    n-gram target of the KL for both rows, so the reference row's KL is the floor that finite
    samples of real text reach. Returns ``{"samples": {...}, "reference": {...}, "num_samples":
    N, "length": L, "kl_target_windows": M - N}``; each row holds ``unigram_entropy``,
    ``distinct_{n}``, ``kl_{n}`` and, with ``ar_model``, ``nll``, ``nll_se``, ``ppl``.

    >>> ref = torch.tensor([[0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 1, 0], [1, 0, 0, 1]])
    >>> r = text_report(torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1]]), ref, distinct_n=(1,), kl_n=(1,))
    >>> r["samples"]["distinct_1"], r["reference"]["distinct_1"], r["kl_target_windows"]
    (0.25, 0.25, 2)
    """
    s, ref = _rows_for(samples_tokens, ar_model, "samples_tokens"), _rows_for(reference_tokens, ar_model,
                                                                              "reference_tokens")
    if not s:
        raise ValueError("samples_tokens holds no sample")
    lengths = {len(r) for r in s} | {len(r) for r in ref}
    if len(lengths) != 1:
        raise ValueError(f"samples and reference windows must all have one length, got lengths {sorted(lengths)}")
    n_s = len(s)
    if len(ref) < 2 * n_s:
        raise ValueError(f"reference_tokens has {len(ref)} windows; pass at least 2 * {n_s} (the first {n_s} are "
                         "compared with the samples, the rest are the KL's n-gram target)")
    ref_row, target = ref[:n_s], ref[n_s:]
    if ar_model is not None:
        vocab_size = int(ar_model.vocab_size)
    else:
        vocab_size = int(max(int(r.max()) for r in s + ref if len(r))) + 1
    distinct_n, kl_n = [_check_n(n) for n in distinct_n], [_check_n(n) for n in kl_n]
    return {"samples": _row_stats(s, target, vocab_size, ar_model, distinct_n, kl_n, eps),
            "reference": _row_stats(ref_row, target, vocab_size, ar_model, distinct_n, kl_n, eps),
            "num_samples": n_s, "length": lengths.pop(), "kl_target_windows": len(target)}
