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
                    cond: dict[str, Any] | None = None, cond_key: str = "labels",
                    rows: Sequence[Tensor | None] | None = None) -> list[Tensor]:
    """``[inner(y, s, labels=L, **cond) for L in label_sets]`` as ONE call; each label set is a
    (B,) LongTensor.  ``rows`` (optional, one entry per label set): None evaluates every row under
    that set, a (B,) bool mask only the selected rows (its block then holds those rows only:
    Adaptive Guidance's unconditional branch)."""
    b, k = y.shape[0], len(label_sets)
    cond = cond or {}
    rows = list(rows) if rows is not None else [None] * k
    if k == 1 and rows[0] is None:
        return [inner(y, s, **{cond_key: label_sets[0]}, **cond)]

    def pick(v: Tensor, r: Tensor | None) -> Tensor:
        return v if r is None else v[r.to(v.device)]

    def stack(v: Any) -> Any:
        if isinstance(v, Tensor) and v.ndim > 0 and v.shape[0] == b:
            return torch.cat([pick(v, r) for r in rows])
        return v

    sizes = [b if r is None else int(r.sum()) for r in rows]
    labels = torch.cat([pick(lab, r) for lab, r in zip(label_sets, rows)])
    out = inner(stack(y), s if isinstance(s, float) else stack(s), **{cond_key: labels},
                **{n: stack(v) for n, v in cond.items()})
    return list(out.split(sizes))
