"""Pictures of samples: a scatter plot for 2-D data, an image grid otherwise."""

from __future__ import annotations

import math

import torch


def image_grid(x: torch.Tensor, nrow: int | None = None, pad: int = 1) -> torch.Tensor:
    """(B, C, H, W) in [-1, 1] -> (H', W', C) in [0, 1] grid."""
    x = ((x.clamp(-1, 1) + 1) / 2).cpu()
    B, C, H, W = x.shape
    nrow = nrow or math.ceil(math.sqrt(B))
    ncol = math.ceil(B / nrow)
    grid = torch.ones(C, ncol * (H + pad) + pad, nrow * (W + pad) + pad)
    for k in range(B):
        r, c = divmod(k, nrow)
        grid[:, pad + r * (H + pad): pad + r * (H + pad) + H, pad + c * (W + pad): pad + c * (W + pad) + W] = x[k]
    return grid.permute(1, 2, 0)


def save_samples(x: torch.Tensor, path: str, title: str = "", nrow: int | None = None) -> None:
    """Write a scatter plot (2-D points) or an image grid (``nrow`` images a row) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .io import atomic_write

    x = x.detach().float().cpu()
    if x.ndim == 2 and x.shape[1] == 2:
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5)
        ax.set_aspect("equal")
    else:
        if x.ndim == 2:  # flattened square images
            side = int(math.isqrt(x.shape[1]))
            x = x.reshape(-1, 1, side, side)
        elif x.ndim == 3:
            x = x[:, None]
        g = image_grid(x[:256], nrow=nrow)
        fig, ax = plt.subplots(figsize=(6, 6))
        ax.imshow((g.squeeze(-1) if g.shape[-1] == 1 else g).numpy(), cmap="gray", vmin=0, vmax=1)
        ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format=path.rsplit(".", 1)[-1]))
    plt.close(fig)
