"""Composable Diffusion (Liu, Li, Du, Torralba & Tenenbaum, ECCV 2022): AND / NOT of the
conditions of one label-conditional model.

A conjunction of concepts c_1..c_n is the product of experts p(x) prod_i p(c_i | x)^{w_i}; its
score is the unconditional score plus the weighted conditional differences, in eps form

    eps~(x_t, t) = eps(x_t, t) + sum_i w_i (eps(x_t, t | c_i) - eps(x_t, t))      [Composable Eq. 10-12]

(Eq. 10: AND with w_i > 0; Eq. 12: NOT c_j is a negative weight on c_j).  eps = (y - D)/s is
affine in D, so in canonical space (DESIGN.md) the same combination of denoisers is

    D~(y, s) = D(y, s | null) + sum_i w_i (D(y, s | c_i) - D(y, s | null)).

All n conditions and the null label are evaluated as ONE batched network call of (n + 1) B rows
(:func:`~diffsolve.guidance.batching.evaluate_labels`, the batching CFG uses); the driver
counts one NFE per call.  CFG is the case n = 1.  When all conditionals are Gaussians with one
shared covariance the composition is exact at every noise level: the weighted product of the
noised Gaussians is the noised product (tests/test_guidance_compose.py); otherwise, as in the
paper, it is the product of the noised experts, an approximation of the noised product.

    >>> import torch, diffsolve
    >>> model = diffsolve.load("digits")
    >>> both = Compose(model, [(1, 1.0), (7, 1.0), (3, -0.5)])     # 1 AND 7 AND NOT 3
    >>> noise = torch.randn(2, *model.shape, generator=torch.Generator().manual_seed(0))
    >>> diffsolve.sample(both, noise, solver="dpm++2m", nfe=8).nfe
    8
"""

from __future__ import annotations

import numbers
from typing import Any, Sequence

import torch
from torch import Tensor

from ..checks import check_int, check_number
from ..denoisers import Denoiser, DenoiserWrapper
from .batching import evaluate_labels

__all__ = ["Compose"]


class Compose(DenoiserWrapper):
    """``D~ = D_null + sum_i w_i (D_{c_i} - D_null)`` [Composable Eq. 10-12] around a
    label-conditional denoiser.

    Args:
        denoiser: a Denoiser taking ``labels`` (one LongTensor label per row) with a null label
            meaning "unconditional" (e.g. :func:`diffsolve.load` models).
        terms: ``[(label, weight), ...]``: each a real class (an integer in [0, num_classes),
            not the null label, each at most once) and a finite non-zero weight: positive is
            AND, negative is NOT.
        null_label: the unconditional label (default: ``denoiser.null_label`` or
            ``num_classes``).
        cond_key: the name of the labels argument (default ``"labels"``).

    The composed denoiser fixes the labels itself: passing ``labels`` to it is refused.
    """

    def __init__(self, denoiser: Denoiser, terms: Sequence[tuple[int, float]], *, null_label: int | None = None,
                 cond_key: str = "labels"):
        super().__init__(denoiser)
        if not isinstance(cond_key, str) or not cond_key.isidentifier():
            raise TypeError(f"Compose: cond_key must be a keyword-argument name, got {cond_key!r}")
        self.cond_key = cond_key
        num_classes = getattr(self.inner, "num_classes", None)
        if null_label is None:
            null_label = getattr(self.inner, "null_label", num_classes)
        if null_label is None:
            raise ValueError("Compose: null_label is needed: the denoiser has no null_label or num_classes attribute")
        self.null_label = check_int("Compose", "null_label", null_label, minimum=0)
        if isinstance(terms, (str, bytes)) or not isinstance(terms, Sequence) or len(terms) == 0:
            raise ValueError(f"Compose: terms={terms!r} is not accepted; accepted: a non-empty list of "
                             f"(label, weight) pairs, e.g. [(1, 1.0), (3, -0.5)] for 1 AND NOT 3")
        labels, weights = [], []
        for k, term in enumerate(terms):
            if not isinstance(term, (tuple, list)) or len(term) != 2:
                raise ValueError(f"Compose: terms[{k}]={term!r} is not accepted; accepted: a (label, weight) pair")
            lab, w = term
            hi = num_classes - 1 if isinstance(num_classes, numbers.Integral) and num_classes > 0 else None
            if lab == self.null_label and not isinstance(lab, bool):
                raise ValueError(f"Compose: terms[{k}] label {lab} is the null label (the unconditional model, "
                                 f"which every composition already contains); accepted: a real class")
            lab = check_int("Compose", f"terms[{k}] label", lab, minimum=0, maximum=hi)
            if lab in labels:
                raise ValueError(f"Compose: label {lab} appears twice in terms; give each label once with "
                                 f"the sum of its weights")
            w = check_number("Compose", f"terms[{k}] weight", w)
            if w == 0:
                raise ValueError(f"Compose: terms[{k}] weight is 0; accepted: a finite non-zero number "
                                 f"(> 0 for AND, < 0 for NOT); drop the term instead")
            labels.append(lab)
            weights.append(w)
        self.labels, self.weights = tuple(labels), tuple(weights)

    def check(self, y: Tensor, cond: dict[str, Any]) -> dict[str, Any]:
        if cond.get(self.cond_key) is not None:
            raise ValueError(f"Compose fixes the labels itself (terms {list(zip(self.labels, self.weights))}); "
                             f"do not pass cond={{{self.cond_key!r}: ...}}")
        null = torch.full((y.shape[0],), self.null_label, dtype=torch.long, device=y.device)
        checked = dict(self.inner.check(y, {**cond, self.cond_key: null}))
        checked.pop(self.cond_key, None)
        return checked

    def accepted_cond(self) -> frozenset[str] | None:
        inner = self.inner.accepted_cond()
        return None if inner is None else inner - {self.cond_key}

    def denoise(self, y: Tensor, s: Tensor | float, **cond: Any) -> Tensor:
        if cond.pop(self.cond_key, None) is not None:
            raise ValueError(f"Compose fixes the labels itself; do not pass {self.cond_key}=...")
        b = y.shape[0]
        sets = [torch.full((b,), lab, dtype=torch.long, device=y.device) for lab in self.labels]
        sets.append(torch.full((b,), self.null_label, dtype=torch.long, device=y.device))
        *d_conds, d_null = evaluate_labels(self.inner, y, s, sets, cond, self.cond_key)  # one call, (n+1)B rows
        out = d_null
        for w, d in zip(self.weights, d_conds):
            out = out + w * (d - d_null)                   # [Composable Eq. 10-12] in canonical (x0) form
        return out

    def __repr__(self) -> str:
        terms = ", ".join(f"({lab}, {w:g})" for lab, w in zip(self.labels, self.weights))
        return f"Compose([{terms}], null_label={self.null_label}, inner={self.inner!r})"
