"""A small pre-norm transformer over character tokens, for the text models of
:mod:`diffsolve.discrete`: bidirectional for masked diffusion (the network sees the partly
masked sequence and returns logits of the clean token at every position) or causal for the
autoregressive reference model.

Positions enter through rotary embeddings in every attention layer [RoFormer Eq. 34]. The
network takes no time input: an absorbing-state (masked) diffusion model's clean-token
conditional does not depend on t once the masked positions are known [RADD Thm. 1], so one
network call per distinct masked sequence is enough and a call can be skipped when nothing
changed.

Token ids ``0..vocab_size-1`` are characters; id ``vocab_size`` is the extra token, the mask
for a bidirectional model and the beginning-of-sequence for a causal one.

    >>> import torch
    >>> from diffsolve.nets.transformer import CharTransformer
    >>> net = CharTransformer(vocab_size=5, dim=16, depth=1, heads=2, max_len=8)
    >>> net(torch.tensor([[0, 5, 2, 5]])).shape
    torch.Size([1, 4, 5])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CharTransformer"]


def rotary(n: int, head_dim: int, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """cos and sin (n, head_dim / 2) of rotary position embeddings [RoFormer Eq. 34]."""
    inv = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    ang = torch.arange(n, dtype=torch.float32)[:, None] * inv[None, :]
    return ang.cos(), ang.sin()


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs (x_2i, x_2i+1) of the last dimension by the position's angles [RoFormer Eq. 34]."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), -1).flatten(-2)


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, causal: bool):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, h: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        b, n, d = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        h = h + self.proj(a.transpose(1, 2).reshape(b, n, d))
        return h + self.mlp(self.norm2(h))


class CharTransformer(nn.Module):
    """``f(tokens (B, L) long) -> logits (B, L, vocab_size)``; token id ``vocab_size`` is the
    mask (bidirectional) or beginning-of-sequence (``causal=True``) token; ``L <= max_len``."""

    def __init__(self, vocab_size: int, dim: int = 192, depth: int = 6, heads: int = 3, max_len: int = 256,
                 causal: bool = False):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be a multiple of heads ({heads})")
        self.vocab_size, self.max_len, self.causal = int(vocab_size), int(max_len), bool(causal)
        if (dim // heads) % 2:
            raise ValueError(f"dim / heads ({dim // heads}) must be even for rotary position embeddings")
        self.tok = nn.Embedding(vocab_size + 1, dim)
        nn.init.normal_(self.tok.weight, std=0.02)
        # rotary positions, not learned absolute ones: a masked position's own input is the mask, so
        # a bidirectional model must find its neighbours by attention alone; with learned absolute
        # embeddings it stayed at the unigram entropy for hundreds of steps (an AR model reads the
        # previous character at its own position and learns at once), with rotary ones relative
        # offsets are visible to every attention head from the start
        cos, sin = rotary(max_len, dim // heads)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.blocks = nn.ModuleList(_Block(dim, heads, causal) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, vocab_size)

    def forward(self, tokens: Tensor) -> Tensor:
        n = tokens.shape[1]
        h = self.tok(tokens)
        cos, sin = self.cos[:n], self.sin[:n]
        for blk in self.blocks:
            h = blk(h, cos, sin)
        return self.out(self.norm(h))
