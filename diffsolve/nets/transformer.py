"""A small pre-norm transformer over character tokens, for the text models of
:mod:`diffsolve.discrete`: bidirectional for masked diffusion (the network sees the partly
masked sequence and returns logits of the clean token at every position) or causal for the
autoregressive reference model.

The network takes no time input: an absorbing-state (masked) diffusion model's clean-token
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


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, causal: bool):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, h: Tensor) -> Tensor:
        b, n, d = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
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
        self.tok = nn.Embedding(vocab_size + 1, dim)
        self.pos = nn.Parameter(torch.zeros(max_len, dim))
        # token and position embeddings on the same scale: with torch's default N(0, 1) token
        # embeddings a 0.02 position signal is drowned, and a bidirectional model (which has no
        # causal mask to tell order) learns nothing beyond unigram statistics for hundreds of steps
        nn.init.normal_(self.tok.weight, std=0.02)
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList(_Block(dim, heads, causal) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, vocab_size)

    def forward(self, tokens: Tensor) -> Tensor:
        h = self.tok(tokens) + self.pos[: tokens.shape[1]]
        for blk in self.blocks:
            h = blk(h)
        return self.out(self.norm(h))
