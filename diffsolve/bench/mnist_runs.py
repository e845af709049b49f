"""What the MNIST benchmarks of steering and guidance share: a resumable list of finished
configurations (one JSON entry each, keyed by ``config``, rewritten atomically after each) and
the metric network's judgement of a set of labelled samples.

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "r.json")
    >>> runs = Runs(path, log=None)
    >>> runs.add({"config": "a", "fd": 1.0}); "a" in Runs(path).have
    True
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import torch

from ..io import atomic_write_json
from ..metrics import image_quality

__all__ = ["Runs", "judge", "diversity"]


class Runs:
    """The entries of ``path`` so far (``entries``, ``have``: their config names); :meth:`add`
    appends one and rewrites the file atomically (a killed run keeps every finished entry)."""

    def __init__(self, path: str, log: Callable[[str], Any] | None = print):
        self.path, self.log = path, log
        self.entries: list[dict[str, Any]] = []
        if os.path.exists(path):
            with open(path) as f:
                self.entries = json.load(f)
        self.have = {e["config"] for e in self.entries}

    def add(self, entry: dict[str, Any]) -> None:
        self.entries.append(entry)
        self.have.add(entry["config"])
        atomic_write_json(self.path, self.entries)
        if self.log:
            self.log(json.dumps(entry))


def diversity(x: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over classes of (mean pairwise feature distance of the samples of the class) /
    (the same for as many MNIST test images of the class): 1 is as diverse as real digits."""
    from ..data import mnist
    from ..metrics import layer_outputs

    real, real_y = mnist("test")

    def spread(f: torch.Tensor) -> float:
        d = torch.cdist(f, f)
        n = f.shape[0]
        return float(d.sum() / (n * (n - 1)))

    ratios = []
    for c in labels.unique().tolist():
        xs = x[labels == c]
        if xs.shape[0] < 2:
            continue
        rs = real[real_y == c][: xs.shape[0]]
        ratios.append(spread(layer_outputs(xs, ("penultimate",))["penultimate"])
                      / spread(layer_outputs(rs.float(), ("penultimate",))["penultimate"]))
    return sum(ratios) / len(ratios)


def judge(x: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """The metric network's numbers of samples ``x`` asked to be of class ``labels``: class
    accuracy, FD with its floor, and :func:`diversity`."""
    q = image_quality(x, labels, knn=False)
    return {"class_accuracy": q["class_accuracy"], "fd": q["fd"], "fd_floor": q["fd_floor"],
            "diversity": diversity(x, labels)}
