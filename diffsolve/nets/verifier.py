"""The steering verifier: a small, smooth MNIST classifier whose input gradient steers diffusion
samples toward a class (:func:`diffsolve.models.verifier.classifier_reward`).

It is deliberately *not* the metric network (:class:`diffsolve.metrics.features.MnistNet`), so
that steered samples are judged by a network they were not steered by:

===================  ==========================================  ==========================================
                     metric network (``MnistNet``)               steering verifier (``ResidualVerifier``)
===================  ==========================================  ==========================================
body                 3 plain 3x3 convs, no normalisation         a stem conv, then 2 stages of (stride-2 conv,
                                                                 pre-activation residual block), GroupNorm
downsampling         2x2 max-pool (28 -> 14 -> 7 -> 3)           stride-2 convolutions (28 -> 14 -> 7), no pooling
nonlinearity         ReLU (piecewise linear)                     SiLU (smooth: an informative input gradient)
head                 flatten (576) -> 128 ReLU units -> 10       global average pool -> linear -> 10
training             clean images (+ shifts), seed 0             shifts + Gaussian noise (std up to 0.3 on half
                                                                 the batches), seed 1
===================  ==========================================  ==========================================

Input: images ``(B, 1, 28, 28)`` in the diffusion model's data range [-1, 1]; output: logits
``(B, classes)``.  Trained by :mod:`diffsolve.train.verifier`.

    >>> import torch
    >>> net = ResidualVerifier()
    >>> net(torch.zeros(3, 1, 28, 28)).shape
    torch.Size([3, 10])
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["ResidualVerifier", "ResidualBlock"]


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(groups, channels), channels)


class ResidualBlock(nn.Module):
    """Pre-activation residual block: ``x + conv(silu(gn(conv(silu(gn(x))))))`` (3x3 convs)."""

    def __init__(self, channels: int, groups: int = 8):
        super().__init__()
        self.body = nn.Sequential(
            _norm(channels, groups), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            _norm(channels, groups), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResidualVerifier(nn.Module):
    """Stem 3x3 conv (``stem`` channels, 28x28); per width in ``widths`` a stride-2 3x3 conv
    (28 -> 14 -> 7) followed by a :class:`ResidualBlock`; GroupNorm + SiLU, global average
    pooling and a linear ``classes``-way head.  Smooth everywhere (SiLU, no max-pool)."""

    def __init__(self, stem: int = 16, widths: tuple[int, ...] | list[int] = (32, 64), groups: int = 8,
                 classes: int = 10, in_channels: int = 1):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if not widths or min(widths) < 1 or stem < 1 or classes < 2:
            raise ValueError(f"need stem >= 1, at least one width >= 1 and classes >= 2; got stem={stem}, "
                             f"widths={widths}, classes={classes}")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, stem, 3, padding=1)]
        c = stem
        for w in widths:
            layers += [_norm(c, groups), nn.SiLU(), nn.Conv2d(c, w, 3, stride=2, padding=1), ResidualBlock(w, groups)]
            c = w
        layers += [_norm(c, groups), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x).mean((2, 3)))
