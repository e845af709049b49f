"""Small CPU-friendly networks for the shipped models: a UNet for images and an MLP for
flattened images and 2-D data.  Both are ``f(x, t, labels=None) -> same shape as x`` with a
sinusoidal embedding of ``t * t_scale`` and, when ``num_classes > 0``, a class embedding with
one extra *null* label (index ``num_classes``) used for unconditional evaluation
(classifier-free guidance).  The networks do not validate labels (that would break a compiled
graph); :func:`check_labels` does, in the Denoiser layer.

    >>> import torch
    >>> from diffsolve.nets import build_net
    >>> net = build_net("mlp", dim=2, hidden=32, depth=2)
    >>> net(torch.randn(5, 2), torch.rand(5)).shape
    torch.Size([5, 2])
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .embed import check_labels
from .mlp import MLP
from .unet import UNet

ARCHITECTURES: dict[str, type[nn.Module]] = {"unet": UNet, "mlp": MLP}


def build_net(arch: str, **kwargs: Any) -> nn.Module:
    """Instantiate a network by architecture name (``"unet"`` or ``"mlp"``) and its kwargs."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; accepted: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch](**kwargs)


def num_params(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


__all__ = ["UNet", "MLP", "build_net", "ARCHITECTURES", "num_params", "check_labels"]
