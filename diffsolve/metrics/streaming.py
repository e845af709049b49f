"""The quality numbers of a sample set that arrives in batches (the shards of a sharded run,
:mod:`diffsolve.shards`), without holding the images at once.

* MNIST-shaped images: each image goes through the shipped CNN once, in the same 1,000-image
  chunks as :func:`~diffsolve.metrics.image_quality` feeds it whatever the batch sizes (its
  float32 features of an image differ in the last bits between chunks of different sizes).
  What is kept per image is its 128 penultimate features (512 bytes; 25.6 MB for 50,000), from
  which the Frechet distance to the shipped test statistics is computed as ``image_quality``
  computes it; class accuracy is a running count.  A running mean and covariance would need
  only 128 x 128 numbers, but the Frechet distance is ill-conditioned on these features (about
  a third of the covariance's eigenvalues are zero: dead ReLU units, whose square roots turn
  float64 rounding of 1e-16 into 1e-8): a covariance merged batch by batch moves the distance
  by about 1e-7 relative, so the features are kept and the numbers are identical.  k-NN
  precision/recall/density/coverage compare every generated feature vector with every other,
  so they keep the conv features (576 float32 a sample, 2.3 kB; 115 MB for 50,000);
  ``knn=False`` leaves them out.
* Exact mixtures: the distances do not stream: the sliced W2 sorts every projection of the whole
  set, the unbiased MMD sums a kernel over all pairs, and the reference is one exact set of the
  same size drawn at once.  :func:`stream_exact_quality` gathers the samples (small for these
  models: 2 or 64 numbers a sample; gmm-3072 at 50,000 samples is 600 MB) and calls
  :func:`~diffsolve.metrics.exact.compare_to_exact`.

The numbers are those of ``image_quality`` / ``compare_to_exact`` on the same samples held at
once, bit for bit.

    >>> import torch
    >>> from diffsolve.data import mnist
    >>> from diffsolve.metrics import image_quality
    >>> x, y = mnist("valid")
    >>> q = stream_image_quality(((x[i:i + 300], y[i:i + 300]) for i in range(0, 900, 300)), knn=False)
    >>> ref = image_quality(x[:900], y[:900], knn=False)
    >>> q == ref
    True
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import Tensor

__all__ = ["stream_image_quality", "stream_exact_quality", "CNN_BATCH"]


#: the chunk size in which image_quality's layer_outputs feeds the CNN
CNN_BATCH = 1000


def _take(pending: list[tuple[Tensor, Tensor | None]], n: int) -> tuple[Tensor, Tensor | None]:
    """The first n images (and labels) of the pending batches, removed from them."""
    xs, ys, got = [], [], 0
    while got < n:
        x, y = pending[0]
        k = min(n - got, x.shape[0])
        xs.append(x[:k])
        ys.append(y[:k] if y is not None else None)
        if k == x.shape[0]:
            pending.pop(0)
        else:
            pending[0] = (x[k:], y[k:] if y is not None else None)
        got += k
    if any(y is None for y in ys) and not all(y is None for y in ys):
        raise ValueError("some images have labels and some have none; label all or none")
    return torch.cat(xs), (None if ys[0] is None else torch.cat(ys))


def stream_image_quality(batches: Iterable[tuple[Tensor, Tensor | None]], k: int = 3, seed: int = 0,
                         knn: bool = True) -> dict[str, Any]:
    """:func:`~diffsolve.metrics.image_quality` of MNIST images arriving as ``(images, labels)``
    batches (labels None in every batch, or in none): the same keys and numbers.  At most
    ``CNN_BATCH`` images are held besides the batch being read; every image's 128 penultimate
    features are kept (and with ``knn`` its 576 conv features)."""
    from . import _test_reference
    from .features import check_images, check_labels, layer_outputs
    from .frechet import feature_stats, frechet_floor, frechet_from_stats, reference_stats
    from .precision_recall import knn_metrics

    feats, conv, correct, labelled, unlabelled = [], [], 0, 0, 0
    layers = ("penultimate", "logits", "conv") if knn else ("penultimate", "logits")

    def consume(images: Tensor, labels: Tensor | None) -> None:
        nonlocal correct, labelled, unlabelled
        out = layer_outputs(images, layers, batch=CNN_BATCH)
        nb = out["penultimate"].shape[0]
        feats.append(out["penultimate"])
        if knn:
            conv.append(out["conv"])
        if labels is None:
            unlabelled += nb
        else:
            correct += int((out["logits"].argmax(1) == labels).sum())
            labelled += nb

    # the CNN sees the images in the chunks image_quality gives it (CNN_BATCH from the first
    # image on), whatever the batches' sizes: its float32 features depend on the chunk size
    pending: list[tuple[Tensor, Tensor | None]] = []
    held = 0
    for images, labels in batches:
        images = check_images(images)
        if labels is not None:
            labels = check_labels(labels, images.shape[0])
        pending.append((images, labels))
        held += images.shape[0]
        while held >= CNN_BATCH:
            x, y = _take(pending, CNN_BATCH)
            consume(x, y)
            held -= CNN_BATCH
    if held:
        consume(*_take(pending, held))
    n = sum(f.shape[0] for f in feats)
    if n < 2:
        raise ValueError(f"image_quality needs at least 2 images, got {n}")
    if labelled and unlabelled:
        raise ValueError(f"{labelled} images have labels and {unlabelled} have none; label all or none")
    mu_r, s_r, _ = reference_stats("mnist-test")
    mu, cov = feature_stats(torch.cat(feats))
    fd, floor = frechet_from_stats(mu, cov, mu_r, s_r), frechet_floor(n)
    q: dict[str, Any] = {"n": int(n), "fd": fd, "fd_floor": floor, "fd_ratio": fd / floor}
    if knn and n > max(k, 5):
        real, radii = _test_reference(min(n, 10000), seed, k)
        q.update(knn_metrics(real, torch.cat(conv), k=k, k_density=5, real_radii=radii))
    if labelled:
        q["class_accuracy"] = correct / labelled
    return q


def stream_exact_quality(gmm: Any, batches: Iterable[Tensor], seed: int = 0, n_proj: int = 256) -> dict[str, float]:
    """:func:`~diffsolve.metrics.exact.compare_to_exact` of samples arriving in batches.  These
    distances need the whole set at once (see the module text), so the batches are gathered."""
    from .exact import compare_to_exact

    parts = [torch.as_tensor(b) for b in batches]
    if not parts:
        raise ValueError("no samples")
    return compare_to_exact(gmm, torch.cat(parts).to(torch.float64), seed=seed, n_proj=n_proj)
