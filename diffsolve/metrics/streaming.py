"""The quality numbers of a sample set that arrives in batches (the shards of a sharded run,
:mod:`diffsolve.shards`), without holding the images at once.

* MNIST-shaped images: each batch goes through the shipped CNN once; the penultimate features
  update a running mean and scatter matrix (float64, merged batch by batch with the pairwise
  update of Chan, Golub & LeVeque 1979), from which the Frechet distance to the shipped test
  statistics follows; class accuracy is a running count.  k-NN precision/recall/density/coverage
  need every generated feature vector against every other (the k-th neighbour radii of the
  generated set), so they keep the conv features (576 float32 per image, 2.3 kB; 115 MB for
  50,000) but not the images; ``knn=False`` keeps nothing per image.
* Exact mixtures: the distances do not stream: the sliced W2 sorts every projection of the whole
  set, the unbiased MMD sums a kernel over all pairs, and the reference is one exact set of the
  same size drawn at once.  :func:`stream_exact_quality` gathers the samples (small for these
  models: 2 or 64 numbers a sample; gmm-3072 at 50,000 samples is 600 MB) and calls
  :func:`~diffsolve.metrics.exact.compare_to_exact`.

The numbers equal :func:`~diffsolve.metrics.image_quality` / ``compare_to_exact`` on the same
samples held at once: exactly for the exact mixtures; for MNIST to about 1e-8 relative (the
CNN's float32 features of an image differ in the last bits between batches of different sizes;
the moments merge to float64 rounding), the class accuracy the same unless an image sits on a
decision boundary.

    >>> import torch
    >>> from diffsolve.data import mnist
    >>> from diffsolve.metrics import image_quality
    >>> x, y = mnist("valid")
    >>> q = stream_image_quality(((x[i:i + 300], y[i:i + 300]) for i in range(0, 900, 300)), knn=False)
    >>> ref = image_quality(x[:900], y[:900], knn=False)
    >>> abs(q["fd"] - ref["fd"]) < 1e-6 * ref["fd"], q["class_accuracy"] == ref["class_accuracy"]
    (True, True)
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import Tensor

__all__ = ["Moments", "stream_image_quality", "stream_exact_quality", "shard_quality"]


class Moments:
    """Running mean and scatter matrix of (N, d) rows, float64, merged batch by batch
    (Chan, Golub & LeVeque 1979): ``cov`` equals :func:`~diffsolve.metrics.frechet.feature_stats`'
    unbiased covariance of all rows seen.

    >>> m = Moments()
    >>> m.update(torch.tensor([[0.0, 1.0]])); m.update(torch.tensor([[2.0, 3.0]]))
    >>> m.mean.tolist(), m.cov.tolist()
    ([1.0, 2.0], [[2.0, 2.0], [2.0, 2.0]])
    """

    def __init__(self) -> None:
        self.n = 0
        self.mean: Tensor | None = None
        self.scatter: Tensor | None = None

    def update(self, x: Tensor) -> None:
        x = torch.as_tensor(x).to(torch.float64)
        if x.dim() != 2 or x.shape[0] == 0:
            raise ValueError(f"expected rows (N >= 1, d), got {tuple(x.shape)}")
        nb = x.shape[0]
        mb = x.mean(0)
        c = x - mb
        sb = c.T @ c
        if self.mean is None:
            self.n, self.mean, self.scatter = nb, mb, sb
            return
        if x.shape[1] != self.mean.shape[0]:
            raise ValueError(f"rows of width {x.shape[1]} after rows of width {self.mean.shape[0]}")
        n = self.n + nb
        delta = mb - self.mean
        self.scatter = self.scatter + sb + torch.outer(delta, delta) * (self.n * nb / n)
        self.mean = self.mean + delta * (nb / n)
        self.n = n

    @property
    def cov(self) -> Tensor:
        if self.n < 2:
            raise ValueError(f"a covariance needs at least 2 rows, got {self.n}")
        return self.scatter / (self.n - 1)


def stream_image_quality(batches: Iterable[tuple[Tensor, Tensor | None]], k: int = 3, seed: int = 0,
                         knn: bool = True) -> dict[str, Any]:
    """:func:`~diffsolve.metrics.image_quality` of MNIST images arriving as ``(images, labels)``
    batches (labels None in every batch, or in none): the same keys and numbers."""
    from . import _test_reference
    from .features import check_labels, layer_outputs
    from .frechet import frechet_floor, frechet_from_stats, reference_stats
    from .precision_recall import knn_metrics

    moments, conv, correct, labelled, unlabelled = Moments(), [], 0, 0, 0
    layers = ("penultimate", "logits", "conv") if knn else ("penultimate", "logits")
    for images, labels in batches:
        out = layer_outputs(images, layers)
        nb = out["penultimate"].shape[0]
        moments.update(out["penultimate"])
        if knn:
            conv.append(out["conv"])
        if labels is None:
            unlabelled += nb
        else:
            correct += int((out["logits"].argmax(1) == check_labels(labels, nb)).sum())
            labelled += nb
    n = moments.n
    if n < 2:
        raise ValueError(f"image_quality needs at least 2 images, got {n}")
    if labelled and unlabelled:
        raise ValueError(f"{labelled} images have labels and {unlabelled} have none; label all or none")
    mu_r, s_r, _ = reference_stats("mnist-test")
    fd, floor = frechet_from_stats(moments.mean, moments.cov, mu_r, s_r), frechet_floor(n)
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


def shard_quality(out_dir: str, knn: bool = True) -> tuple[str, dict[str, Any]]:
    """The quality numbers of the sharded run in ``out_dir`` (:mod:`diffsolve.shards`), reading
    one shard at a time: ``("exact", compare_to_exact numbers)`` for an exact mixture,
    ``("mnist", image_quality numbers)`` for 28x28 grey images, ``("none", {})`` otherwise."""
    from ..models.gmm import BUILTINS, builtin
    from ..shards import _model, read_manifest, read_shards

    run = read_manifest(out_dir)
    if run.model in BUILTINS:
        return "exact", stream_exact_quality(builtin(run.model), (s.samples for s in read_shards(out_dir)))
    if tuple(getattr(_model(run.model), "shape", ())) != (1, 28, 28):
        list(read_shards(out_dir))  # still check that every shard is there and belongs to the run
        return "none", {}
    return "mnist", stream_image_quality(((s.samples, s.labels) for s in read_shards(out_dir)), knn=knn)
