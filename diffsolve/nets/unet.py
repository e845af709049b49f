"""A small UNet for images (Ronneberger et al. 2015, in the form of Ho et al. 2020 /
Dhariwal & Nichol 2021): residual blocks whose group norm is modulated by the time + class
embedding (adaptive scale/shift), self-attention at the lowest resolutions, strided-conv
downsampling, nearest-neighbour upsampling and one skip connection per block.

    >>> import torch
    >>> from diffsolve.nets import UNet
    >>> net = UNet(in_channels=1, channels=16, channel_mults=(1, 2), attn_levels=(1,), num_classes=10)
    >>> net(torch.randn(2, 1, 8, 8), torch.rand(2), labels=torch.tensor([3, 10])).shape
    torch.Size([2, 1, 8, 8])
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .embed import Conditioning


def _zero(m: nn.Module) -> nn.Module:
    for p in m.parameters():
        nn.init.zeros_(p)
    return m


def _norm(ch: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(groups, ch), ch)


class ResBlock(nn.Module):
    """h = conv(act(norm(x))); h = conv(act(norm(h) * (1 + scale) + shift)); return skip(x) + h."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int = 8, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin, groups), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2, self.drop = _norm(cout, groups), nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over the pixels of a feature map, residual, zero-initialised."""

    def __init__(self, ch: int, heads: int = 1, groups: int = 8):
        super().__init__()
        self.heads, self.norm = heads, _norm(ch, groups)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = _zero(nn.Conv2d(ch, ch, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, hh, ww = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, hh * ww).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, hh, ww))


class UNet(nn.Module):
    """UNet ``f(x, t, labels=None)`` for images of shape (B, in_channels, H, W).

    Args:
        in_channels: image channels (the output has the same number).
        channels: width of the first level; level i has ``channels * channel_mults[i]``.
        channel_mults: one entry per resolution level; each level after the first halves H, W
            (stride-2 convolution, so odd sizes such as 7 work: 28 -> 14 -> 7).
        num_res_blocks: residual blocks per level on the way down (and up).
        attn_levels: indices of the levels that get self-attention after each block (and
            always the middle block at the lowest level).
        num_classes: 0 for unconditional; else labels 0..num_classes-1 plus the null label.
        t_scale: the time embedding sees ``t * t_scale`` (1000 for t in [0, 1], 1 for DDPM
            indices).
    """

    def __init__(self, in_channels: int = 1, channels: int = 32, channel_mults: Sequence[int] = (1, 2, 2),
                 num_res_blocks: int = 1, attn_levels: Sequence[int] = (2,), num_classes: int = 0,
                 t_scale: float = 1000.0, dropout: float = 0.0, groups: int = 8, heads: int = 1):
        super().__init__()
        emb_dim = 4 * channels
        self.cond = Conditioning(emb_dim, num_classes, t_scale, freq_dim=channels)
        self.num_classes = num_classes
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        widths = [channels * m for m in channel_mults]
        self.down = nn.ModuleList()
        skips, c = [channels], channels
        for lvl, w in enumerate(widths):
            if lvl > 0:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
            for _ in range(num_res_blocks):
                self.down.append(ResBlock(c, w, emb_dim, groups, dropout))
                c = w
                if lvl in attn_levels:
                    self.down.append(Attention(c, heads, groups))
                skips.append(c)
        self.mid = nn.ModuleList([ResBlock(c, c, emb_dim, groups, dropout), Attention(c, heads, groups),
                                  ResBlock(c, c, emb_dim, groups, dropout)])
        self.up = nn.ModuleList()
        for lvl in reversed(range(len(widths))):
            w = widths[lvl]
            for _ in range(num_res_blocks + 1):
                self.up.append(ResBlock(c + skips.pop(), w, emb_dim, groups, dropout))
                c = w
                if lvl in attn_levels:
                    self.up.append(Attention(c, heads, groups))
            if lvl > 0:
                self.up.append(nn.Upsample(scale_factor=2, mode="nearest"))
                self.up.append(nn.Conv2d(c, c, 3, padding=1))
        self.norm_out = _norm(c, groups)
        self.conv_out = _zero(nn.Conv2d(c, in_channels, 3, padding=1))

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        emb = self.cond(t, labels, x)
        h = self.conv_in(x)
        hs = [h]
        for m in self.down:
            if isinstance(m, ResBlock):
                h = m(h, emb)
                hs.append(h)
            elif isinstance(m, Attention):
                h = m(h)
                hs[-1] = h
            else:  # downsampling conv
                h = m(h)
                hs.append(h)
        for m in self.mid:
            h = m(h, emb) if isinstance(m, ResBlock) else m(h)
        for m in self.up:
            if isinstance(m, ResBlock):
                h = m(torch.cat([h, hs.pop()], dim=1), emb)
            elif isinstance(m, nn.Upsample):
                h = m(h)
                if h.shape[-2:] != hs[-1].shape[-2:]:  # odd sizes: 7 -> 14 fine, 7 <- 4 needs a crop
                    h = h[..., : hs[-1].shape[-2], : hs[-1].shape[-1]]
            else:
                h = m(h)
        return self.conv_out(F.silu(self.norm_out(h)))
