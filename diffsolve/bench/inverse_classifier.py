"""An independent MNIST classifier for the inverse-problem benchmark: not the shipped CNN
(:mod:`diffsolve.metrics.features`), a different model family trained here on different code.

A scikit-learn ``MLPClassifier`` (one hidden layer of 256 ReLU units, Adam, 12 epochs, seed 0)
on the 50,000 MNIST training images in [0, 1] (``diffsolve.data.mnist("train")``). Fitting takes
about a minute on one CPU core; the fitted model is cached (pickled) in ``$DIFFSOLVE_CACHE``
(default ``~/.cache/diffsolve``) and never shipped. Its test accuracy is reported with it
(``independent_classifier().test_accuracy``, about 0.98).

    >>> clf = independent_classifier()                        # doctest: +SKIP
    >>> from diffsolve.data import mnist
    >>> x, y = mnist("test")                                  # doctest: +SKIP
    >>> float((clf.predict(x[:500]) == y[:500]).double().mean()) > 0.95   # doctest: +SKIP
    True
"""

from __future__ import annotations

import os
import pickle
import warnings

import torch
from torch import Tensor

from ..io import atomic_write

__all__ = ["IndependentClassifier", "independent_classifier", "cache_dir"]

_NAME = "mnist-mlp256-sklearn-v1.pkl"


def cache_dir() -> str:
    """Where fitted helpers are cached: ``$DIFFSOLVE_CACHE`` or ``~/.cache/diffsolve``."""
    return os.environ.get("DIFFSOLVE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "diffsolve")


class IndependentClassifier:
    """A fitted scikit-learn MLP on flattened MNIST images; ``predict`` takes images in [-1, 1]."""

    def __init__(self, model, test_accuracy: float):
        self.model, self.test_accuracy = model, float(test_accuracy)

    @staticmethod
    def _features(images: Tensor):
        x = torch.as_tensor(images).detach().to(torch.float32).cpu()
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 28):
            raise ValueError(f"images must be (N, 1, 28, 28) in [-1, 1], got {tuple(x.shape)}")
        return ((x.clamp(-1, 1) + 1) / 2).reshape(x.shape[0], -1).numpy()

    def predict(self, images: Tensor) -> Tensor:
        """Predicted digits (N,) int64."""
        return torch.from_numpy(self.model.predict(self._features(images))).long()

    def accuracy(self, images: Tensor, labels: Tensor) -> float:
        return float((self.predict(images) == torch.as_tensor(labels)).double().mean())


def _fit() -> IndependentClassifier:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    from ..data import mnist

    x, y = mnist("train")
    xt, yt = mnist("test")
    model = MLPClassifier(hidden_layer_sizes=(256,), max_iter=12, batch_size=128, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(IndependentClassifier._features(x), y.numpy())
    clf = IndependentClassifier(model, 0.0)
    clf.test_accuracy = clf.accuracy(xt, yt)
    return clf


_LOADED: list[IndependentClassifier] = []


def independent_classifier() -> IndependentClassifier:
    """The fitted classifier: from the cache, else fitted now (about a minute) and cached."""
    if _LOADED:
        return _LOADED[0]
    path = os.path.join(cache_dir(), _NAME)
    clf = None
    if os.path.exists(path):
        try:
            with open(path, "rb") as f:
                clf = pickle.load(f)
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
            clf = None  # a stale or torn cache: fit again
    if not isinstance(clf, IndependentClassifier):
        clf = _fit()
        os.makedirs(cache_dir(), exist_ok=True)

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                pickle.dump(clf, f)
        atomic_write(path, write)
    _LOADED.append(clf)
    return clf
