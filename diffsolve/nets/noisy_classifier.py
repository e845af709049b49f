"""A noise-conditional classifier ``p(c | y, s)`` for classifier guidance (Dhariwal & Nichol 2021,
Sec. 4): it reads the *noised* state, in canonical space ``y = x0 + s eps`` (DESIGN.md), and the
noise level ``s``.

Its input is preconditioned like the EDM network it guides (Karras et al. 2022, Table 1):
``c_in(s) y`` with ``c_in = 1 / sqrt(sigma_data^2 + s^2)`` (unit variance at every level) and the
level enters as ``c_noise = ln(s) / 4``, embedded sinusoidally (scaled by ``t_scale``, as the
MNIST UNet does) and fed through a small MLP whose projections are added to every stage's
channels.  ``s = 0`` (a clean image) is read as ``s_floor`` (the EDM path's s_min 0.002) in the
embedding only.  The body is the steering verifier's (:mod:`diffsolve.nets.verifier`): GroupNorm,
SiLU, stride-2 convolutions, pre-activation residual blocks, global average pooling, so the
input gradient is smooth.  Because the preconditioning is inside ``forward``, autograd gives
``grad_y log p(c | y, s)`` directly in canonical space.

    >>> import torch
    >>> net = NoisyClassifier()
    >>> net(torch.zeros(3, 1, 28, 28), torch.tensor([0.0, 0.5, 5.0])).shape
    torch.Size([3, 10])
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .embed import sinusoidal
from .verifier import ResidualBlock, _norm

__all__ = ["NoisyClassifier"]


class NoisyClassifier(nn.Module):
    """``forward(y, s) -> logits (B, classes)`` for canonical states ``y`` (B, C, H, W) and levels
    ``s`` (a number or a (B,) tensor).  Stem 3x3 conv, then per width a stride-2 conv and a
    :class:`ResidualBlock`; the noise embedding is added after the stem and after every
    down-sampling conv."""

    def __init__(self, stem: int = 16, widths: tuple[int, ...] | list[int] = (32, 64), groups: int = 8,
                 classes: int = 10, in_channels: int = 1, emb_dim: int = 64, sigma_data: float = 0.5,
                 t_scale: float = 250.0, s_floor: float = 0.002):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if not widths or min(widths) < 1 or stem < 1 or classes < 2 or emb_dim < 2 or emb_dim % 2:
            raise ValueError(f"need stem >= 1, widths >= 1, classes >= 2 and an even emb_dim >= 2; got stem={stem}, "
                             f"widths={widths}, classes={classes}, emb_dim={emb_dim}")
        if not sigma_data > 0 or not s_floor > 0:
            raise ValueError(f"sigma_data and s_floor must be > 0, got {sigma_data}, {s_floor}")
        self.sigma_data, self.t_scale, self.s_floor, self.emb_dim = float(sigma_data), float(t_scale), float(s_floor), emb_dim
        self.embed = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim), nn.SiLU())
        self.stem = nn.Conv2d(in_channels, stem, 3, padding=1)
        self.stem_emb = nn.Linear(emb_dim, stem)
        self.down, self.down_emb, self.blocks = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        c = stem
        for w in widths:
            self.down.append(nn.Sequential(_norm(c, groups), nn.SiLU(), nn.Conv2d(c, w, 3, stride=2, padding=1)))
            self.down_emb.append(nn.Linear(emb_dim, w))
            self.blocks.append(ResidualBlock(w, groups))
            c = w
        self.out = nn.Sequential(_norm(c, groups), nn.SiLU())
        self.head = nn.Linear(c, classes)

    def forward(self, y: Tensor, s: Tensor | float) -> Tensor:
        s = torch.as_tensor(s, dtype=y.dtype, device=y.device)
        if s.ndim == 0:
            s = s.expand(y.shape[0])
        c_in = torch.rsqrt(self.sigma_data ** 2 + s * s)                     # [EDM Table 1] c_in
        c_noise = torch.log(s.clamp(min=self.s_floor)) / 4                   # [EDM Table 1] c_noise
        e = self.embed(sinusoidal(self.t_scale * c_noise, self.emb_dim).to(y.dtype))
        h = self.stem(y * c_in[:, None, None, None]) + self.stem_emb(e)[:, :, None, None]
        for down, proj, block in zip(self.down, self.down_emb, self.blocks):
            h = block(down(h) + proj(e)[:, :, None, None])
        return self.head(self.out(h).mean((2, 3)))
