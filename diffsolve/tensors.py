"""Small tensor helpers shared by the denoisers and the solvers (one broadcast rule)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["bc"]


def bc(v: Tensor | float, y: Tensor) -> Tensor | float:
    """Broadcast a scalar or a per-row vector against a batch ``y`` of shape (B, ...).

    Python numbers and 0-dim CPU tensors (grid levels) come back as Python floats, so that no
    tensor is built for them; a (B,) tensor is reshaped to (B, 1, ..., 1).

        >>> import torch
        >>> bc(torch.tensor([1.0, 2.0]), torch.zeros(2, 3, 4)).shape
        torch.Size([2, 1, 1])
        >>> bc(0.5, torch.zeros(2, 3))
        0.5
    """
    if isinstance(v, (int, float)):
        return v
    if isinstance(v, Tensor) and v.ndim == 0 and v.device.type == "cpu":
        return v.item()
    v = torch.as_tensor(v, dtype=y.dtype, device=y.device) if not isinstance(v, Tensor) else v
    if v.ndim == 0:
        return v
    return v.reshape(v.shape[0], *([1] * (y.ndim - 1)))
