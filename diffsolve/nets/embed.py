"""Time and class embeddings shared by the networks."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Transformer-style sinusoidal features of a 1-D tensor ``t`` (Vaswani et al. 2017,
    Sec. 3.5; as the time embedding of Ho et al. 2020): [cos(t w_i), sin(t w_i)] with
    w_i = max_period^(-i / (dim/2))."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class Conditioning(nn.Module):
    """emb = MLP(sinusoidal(t_scale * t)) + class_embedding(label).

    ``num_classes > 0`` adds an embedding table of ``num_classes + 1`` rows; the last row is the
    null label (unconditional), used when ``labels`` is None.
    """

    def __init__(self, dim: int, num_classes: int = 0, t_scale: float = 1000.0, freq_dim: int | None = None):
        super().__init__()
        self.freq_dim = freq_dim or dim
        self.t_scale, self.num_classes = float(t_scale), int(num_classes)
        self.mlp = nn.Sequential(nn.Linear(self.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.label = nn.Embedding(self.num_classes + 1, dim) if self.num_classes > 0 else None

    def forward(self, t: Tensor, labels: Tensor | None, batch: int) -> Tensor:
        t = torch.as_tensor(t, device=self.mlp[0].weight.device)
        if t.ndim == 0:
            t = t.expand(batch)
        emb = self.mlp(sinusoidal(t * self.t_scale, self.freq_dim).to(self.mlp[0].weight.dtype))
        if self.label is not None:
            if labels is None:
                labels = torch.full((batch,), self.num_classes, dtype=torch.long, device=emb.device)
            labels = torch.as_tensor(labels, device=emb.device).long()
            if labels.ndim == 0:
                labels = labels.expand(batch)
            if bool(((labels < 0) | (labels > self.num_classes)).any()):
                raise ValueError(f"labels must be in 0..{self.num_classes} ({self.num_classes} = null label), "
                                 f"got {sorted(set(labels.tolist()))[:8]}")
            emb = emb + self.label(labels)
        elif labels is not None:
            raise ValueError("this network is unconditional (num_classes=0) but labels were given")
        return emb
