"""Writes docs/compose.png: SuperDiff OR (union) and AND (intersection) of two exact 2-D mixtures.

    python docs/compose_figure.py
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

import diffsolve
from diffsolve.guidance.superdiff import SuperDiff

F = torch.float64


def gm(means, c=0.2):
    means = torch.tensor(means, dtype=F)
    return diffsolve.GaussianMixture(torch.ones(len(means)), means, torch.full((len(means),), c * c, dtype=F))


def main(path: str = "docs/compose.png") -> None:
    a = gm([[-2.0, 0.0], [0.0, 0.0], [-1.0, 1.5]])
    b = gm([[2.0, 0.0], [0.0, 0.0], [1.0, 1.5]])
    noise = torch.randn(1500, 2, dtype=F, generator=torch.Generator().manual_seed(0))
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.4), sharex=True, sharey=True)
    panels = [("model A", a.sample(1500, torch.Generator().manual_seed(1))),
              ("model B", b.sample(1500, torch.Generator().manual_seed(2)))]
    for mode, title in (("or", "SuperDiff OR (union)"), ("and", "SuperDiff AND (intersection)")):
        sd = SuperDiff([a, b], mode)
        panels.append((title, diffsolve.sample(sd, noise, solver="euler-maruyama", nfe=200,
                                               hooks=[sd.hook]).samples))
    for ax, (title, x) in zip(axes, panels):
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.4)
        ax.set_title(title)
        ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
