"""The shipped noise-conditional MNIST classifier ``p(c | y, s)`` that classifier guidance reads
(:class:`diffsolve.guidance.ClassifierGuidance`).  Architecture and input convention:
:mod:`diffsolve.nets.noisy_classifier` (canonical ``y = x0 + s eps``, x0 in [-1, 1]); training:
:mod:`diffsolve.train.noisy_classifier`; weights
``diffsolve/models/weights/mnist-noisy-classifier.safetensors`` (+ ``.json``: what made them and
the test accuracy at s = 0, 0.5, 1, 2, 5).

    >>> import torch
    >>> net = load_noisy_classifier()
    >>> net(torch.zeros(2, 1, 28, 28), 1.0).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..nets.noisy_classifier import NoisyClassifier
from .shipped_nets import ShippedNets

__all__ = ["load_noisy_classifier", "noisy_classifier_meta", "NOISY_CLASSIFIERS"]

#: accepted names -> the shipped files' name in WEIGHTS_DIR
NOISY_CLASSIFIERS = {"mnist": "mnist-noisy-classifier"}


_NETS = ShippedNets("noisy classifier", NOISY_CLASSIFIERS, {"NoisyClassifier": NoisyClassifier},
                    rebuild="diffsolve.train.noisy_classifier.train_noisy_classifier and export_noisy_classifier")


def noisy_classifier_meta(name: str = "mnist") -> dict[str, Any]:
    """What made the shipped classifier (its JSON: architecture, training, accuracy by level)."""
    return _NETS.meta(name)


def load_noisy_classifier(name: str = "mnist") -> nn.Module:
    """The shipped noise-conditional classifier: a new module each call, eval mode, float32, CPU,
    parameters frozen (the input gradient flows).  ``net(y, s) -> logits (B, 10)`` for canonical
    states ``y`` (B, 1, 28, 28) and levels ``s`` (a number or a (B,) tensor, s >= 0)."""
    return _NETS.load(name)
