"""Time and class embeddings shared by the networks, and the label check that belongs outside
them.

The networks' ``forward`` is graph-clean (``torch.compile(fullgraph=True)``, ``torch.export``):
no data-dependent Python branching and no reach into a layer's ``.weight`` for the device or
dtype (both come from the input).  Label validation is :func:`check_labels`, which the
Denoiser layer calls before the network sees the labels.

    >>> import torch
    >>> check_labels([3, 10], batch=2, num_classes=10)
    tensor([ 3, 10])
    >>> check_labels(torch.tensor([2.7, 1.0]), batch=2, num_classes=10)
    Traceback (most recent call last):
    ...
    ValueError: labels must be whole numbers (class indices), got 2.7
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["sinusoidal", "Conditioning", "check_labels"]


def sinusoidal(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Transformer-style sinusoidal features of a 1-D tensor ``t`` (Vaswani et al. 2017,
    Sec. 3.5; as the time embedding of Ho et al. 2020): [cos(t w_i), sin(t w_i)] with
    w_i = max_period^(-i / (dim/2))."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


def check_labels(labels: Any, batch: int, num_classes: int) -> Tensor | None:
    """Validate class labels for a network with ``num_classes`` classes and a batch of ``batch``.

    Accepts an integer or 0-dim tensor (one label for every row), or a sequence, numpy array or
    tensor of shape ``(batch,)``, of whole numbers in ``0..num_classes``, where
    ``num_classes`` is the null (unconditional) label; float values must be whole (2.0 is 2).
    Returns an int64 tensor of shape ``(batch,)`` (on the labels' device), or None for None.

    Raises ``ValueError`` naming the bad value for bools, complex or non-whole numbers, a wrong
    length or shape, values outside ``0..num_classes``, and any labels given to an
    unconditional network (``num_classes == 0``).
    """
    if labels is None:
        return None
    if num_classes <= 0:
        raise ValueError("labels were given but this network is unconditional (num_classes=0); "
                         "drop the labels or load a class-conditional model")
    if isinstance(labels, bool):
        raise ValueError(f"labels must be class indices 0..{num_classes}, got the bool {labels!r}")
    try:
        lab = torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"labels must be integers 0..{num_classes} (a tensor, sequence or int), "
                         f"got {type(labels).__name__}: {e}") from None
    if lab.device.type == "meta":
        raise ValueError("labels are on the 'meta' device (they have no values); give them on the CPU or an accelerator")
    if lab.dtype == torch.bool:
        raise ValueError(f"labels must be class indices 0..{num_classes}, got a bool tensor")
    if lab.is_complex():
        raise ValueError(f"labels must be class indices 0..{num_classes}, got a complex tensor")
    if lab.is_floating_point():
        bad = lab[~(torch.isfinite(lab) & (lab == lab.round()))]
        if bad.numel():
            raise ValueError(f"labels must be whole numbers (class indices), got {float(bad[0]):g}")
    if lab.ndim == 0:
        lab = lab.expand(batch)
    if lab.shape != (batch,):
        raise ValueError(f"labels must have shape ({batch},) (one per row of the batch) or be a single "
                         f"label, got shape {tuple(lab.shape)}")
    out_of_range = lab[(lab < 0) | (lab > num_classes)]
    if out_of_range.numel():
        vals = sorted(set(out_of_range.tolist()))[:8]
        raise ValueError(f"labels must be in 0..{num_classes} ({num_classes} = null label), got {vals}")
    return lab.long()


class Conditioning(nn.Module):
    """emb = MLP(sinusoidal(t_scale * t)) + class_embedding(label).

    ``num_classes > 0`` adds an embedding table of ``num_classes + 1`` rows; the last row is the
    null label (unconditional), used when ``labels`` is None.  Labels are not validated here
    (that would break a compiled graph): see :func:`check_labels`.
    """

    def __init__(self, dim: int, num_classes: int = 0, t_scale: float = 1000.0, freq_dim: int | None = None):
        super().__init__()
        self.freq_dim = freq_dim or dim
        self.t_scale, self.num_classes = float(t_scale), int(num_classes)
        self.mlp = nn.Sequential(nn.Linear(self.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.label = nn.Embedding(self.num_classes + 1, dim) if self.num_classes > 0 else None

    def forward(self, t: Tensor | float, labels: Tensor | None, x: Tensor) -> Tensor:
        """The embedding of (t, labels) for the batch ``x``, whose first dimension, device and
        dtype the embedding takes; ``t`` is one level or one per row, ``labels`` likewise."""
        batch = x.shape[0]
        t = torch.as_tensor(t).to(x.device)
        if t.ndim == 0:
            t = t.expand(batch)
        emb = self.mlp(sinusoidal(t * self.t_scale, self.freq_dim).to(x.dtype))
        if self.label is None:
            return emb  # unconditional: labels are refused by check_labels, not here
        if labels is None:
            labels = torch.full((batch,), self.num_classes, dtype=torch.long, device=x.device)
        labels = torch.as_tensor(labels).to(device=x.device, dtype=torch.long)
        if labels.ndim == 0:
            labels = labels.expand(batch)
        return emb + self.label(labels)
