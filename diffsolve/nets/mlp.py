"""A residual MLP ``f(x, t, labels=None)`` for 2-D data and flattened small images.

    >>> import torch
    >>> from diffsolve.nets import MLP
    >>> MLP(dim=64, hidden=64, depth=2, num_classes=10)(torch.randn(3, 1, 8, 8), torch.rand(3)).shape
    torch.Size([3, 1, 8, 8])
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from .embed import Conditioning


class _Block(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.norm, self.fc1, self.fc2 = nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.emb = nn.Linear(hidden, hidden)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        z = self.fc1(F.silu(self.norm(h))) + self.emb(emb)
        return h + self.fc2(F.silu(z))


class MLP(nn.Module):
    """Residual MLP: any input shape (B, ...) with ``prod(...) == dim``; the output has the
    input's shape. ``num_classes``/``t_scale`` as in :class:`~diffsolve.nets.UNet`."""

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, num_classes: int = 0,
                 t_scale: float = 1000.0):
        super().__init__()
        self.dim, self.num_classes = dim, num_classes
        self.cond = Conditioning(hidden, num_classes, t_scale)
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList([_Block(hidden) for _ in range(depth)])
        self.norm, self.out = nn.LayerNorm(hidden), nn.Linear(hidden, dim)

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        shape = x.shape
        h = self.inp(x.reshape(shape[0], -1))
        emb = F.silu(self.cond(t, labels, x))
        for b in self.blocks:
            h = b(h, emb)
        return self.out(F.silu(self.norm(h))).reshape(shape)
