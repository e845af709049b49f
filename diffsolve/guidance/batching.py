"""One network call for several label sets: the batching that CFG and Composable Diffusion share.

A label-conditional denoiser evaluated at the same ``(y, s)`` under K label sets is one call of
K*B rows: ``y`` and every per-row conditioning tensor repeated K times, the label sets stacked
in order; the output is split back into K blocks of B rows.  A float level stays a float, so a
network adapter keeps its per-level cache.

    >>> import torch
    >>> from diffsolve.denoisers import FunctionDenoiser
    >>> d = FunctionDenoiser(lambda y, s, labels: y + labels[:, None])
    >>> a, b = evaluate_labels(d, torch.zeros(2, 1), 1.0, [torch.tensor([0, 1]), torch.tensor([5, 5])])
    >>> a.flatten().tolist(), b.flatten().tolist()
    ([0.0, 1.0], [5.0, 5.0])
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

__all__ = ["evaluate_labels"]


def evaluate_labels(inner: Any, y: Tensor, s: Tensor | float, label_sets: Sequence[Tensor],
                    cond: dict[str, Any] | None = None, cond_key: str = "labels") -> list[Tensor]:
    """``[inner(y, s, labels=L, **cond) for L in label_sets]`` as ONE call of ``len(label_sets) * B``
    rows; each label set is a (B,) LongTensor."""
    b, k = y.shape[0], len(label_sets)
    cond = cond or {}
    if k == 1:
        return [inner(y, s, **{cond_key: label_sets[0]}, **cond)]
    rep = {n: (torch.cat([v] * k) if isinstance(v, Tensor) and v.ndim > 0 and v.shape[0] == b else v)
           for n, v in cond.items()}
    sk = s if isinstance(s, float) else torch.cat([s] * k)
    out = inner(torch.cat([y] * k), sk, **{cond_key: torch.cat(list(label_sets))}, **rep)
    return list(out.split(b))
