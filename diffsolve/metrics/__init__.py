"""Metrics: image quality on MNIST with a feature network we train and ship, and distribution
distances against exact models.

* :mod:`.features` -- the shipped MNIST CNN: ``features`` (128-d penultimate, or 576-d conv),
  ``classify``, ``class_accuracy``.
* :mod:`.frechet` -- Frechet distance to the shipped MNIST test-set statistics, and its floor.
* :mod:`.precision_recall` -- k-NN improved precision and recall (Kynkaanniemi et al. 2019),
  density and coverage (Naeem et al. 2020).
* :mod:`.exact` -- sliced W2, MMD, mode-weight TV and RMS error for exact (Gaussian-mixture) models.

:func:`image_quality` runs the MNIST metrics in one call.

Example::

    >>> from diffsolve.data import mnist
    >>> from diffsolve.metrics import image_quality
    >>> x, y = mnist("valid")
    >>> q = image_quality(x[:1000], labels=y[:1000])
    >>> sorted(q)
    ['class_accuracy', 'coverage', 'density', 'fd', 'fd_floor', 'fd_ratio', 'n', 'precision', 'recall']
    >>> q["fd_ratio"] < 2 and q["class_accuracy"] > 0.98 and q["precision"] > 0.6
    True
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

from .exact import compare_to_exact, median_bandwidth, mmd, mode_tv, mode_tv_floor, rms_error, sliced_w2
from .features import (FEATURE_DIM, LAYERS, check_images, check_labels, class_accuracy, classify, feature_net,
                       features, layer_outputs, logits)
from .frechet import (REFERENCES, feature_stats, frechet_distance, frechet_floor, frechet_from_stats,
                      reference_stats, trace_sqrt_product)
from .precision_recall import density_coverage, knn_metrics, knn_radii, precision_recall

__all__ = ["image_quality", "format_quality", "features", "layer_outputs", "LAYERS", "logits", "classify", "class_accuracy", "feature_net",
           "check_images", "FEATURE_DIM", "frechet_distance", "frechet_floor", "frechet_from_stats",
           "feature_stats", "reference_stats", "trace_sqrt_product", "REFERENCES", "precision_recall",
           "density_coverage", "knn_radii", "knn_metrics", "sliced_w2", "mmd", "median_bandwidth", "mode_tv",
           "mode_tv_floor", "rms_error", "compare_to_exact"]


@lru_cache(maxsize=2)
def _test_reference(n: int, seed: int, k: int) -> tuple[Tensor, Tensor]:
    """Conv features of a seeded subset of n MNIST test images and their k-NN radii (k and 5)."""
    from ..data import mnist

    x = mnist("test")[0]
    if n < x.shape[0]:
        x = x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]]
    f = features(x, layer="conv")
    return f, knn_radii(f, (k, 5))


def image_quality(images: Tensor, labels: Tensor | None = None, k: int = 3, seed: int = 0, knn: bool = True) -> dict:
    """All MNIST image metrics of generated images (N, 1, 28, 28) in [-1, 1] (clamped), as a dict
    of plain numbers:

    * ``fd``: Frechet distance (penultimate features) to the MNIST test statistics; ``fd_floor``:
      the same for N real training images (:func:`frechet_floor`); ``fd_ratio`` = fd / fd_floor
      (1 is as good as real data of the same size);
    * ``precision``, ``recall`` (k-NN, ``k``) and ``density``, ``coverage`` (k = 5, Naeem et al.)
      on the conv features, against min(N, 10000) test images (a seeded random subset);
    * ``class_accuracy`` (only with ``labels``): fraction classified as their label.

    ``knn=False`` leaves out the k-NN metrics, the only ones that read MNIST test images
    (``diffsolve.data.mnist_missing()`` says whether they can be read).
    """
    out = layer_outputs(images)
    n = out["penultimate"].shape[0]
    if n < 2:
        raise ValueError(f"image_quality needs at least 2 images, got {n}")
    fd, floor = frechet_distance(out["penultimate"]), frechet_floor(n)
    q = {"n": int(n), "fd": fd, "fd_floor": floor, "fd_ratio": fd / floor}
    if knn and n > max(k, 5):
        real, radii = _test_reference(min(n, 10000), seed, k)
        q.update(knn_metrics(real, out["conv"], k=k, k_density=5, real_radii=radii))
    if labels is not None:
        labels = check_labels(labels, n)
        q["class_accuracy"] = float((out["logits"].argmax(1) == labels).double().mean())
    return q


def format_quality(q: dict) -> str:
    """One line for a dict from :func:`image_quality`.

    >>> format_quality({"n": 10, "fd": 1.23456, "fd_floor": 0.5, "fd_ratio": 2.469})
    'n=10 fd=1.235 fd_floor=0.5 fd_ratio=2.469'
    """
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in q.items())
