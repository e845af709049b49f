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

import json
import os
from functools import lru_cache
from typing import Any

import torch
from torch import nn

from ..nets.noisy_classifier import NoisyClassifier
from .checkpoint import WEIGHTS_DIR

__all__ = ["load_noisy_classifier", "noisy_classifier_meta", "NOISY_CLASSIFIERS"]

#: accepted names -> the shipped files' name in WEIGHTS_DIR
NOISY_CLASSIFIERS = {"mnist": "mnist-noisy-classifier"}


def _files(name: str) -> tuple[str, str]:
    if not isinstance(name, str) or name not in NOISY_CLASSIFIERS:
        raise ValueError(f"unknown noisy classifier {name!r}; accepted: {', '.join(NOISY_CLASSIFIERS)}")
    base = os.path.join(WEIGHTS_DIR, NOISY_CLASSIFIERS[name])
    for ext in (".json", ".safetensors"):
        if not os.path.exists(base + ext):
            raise FileNotFoundError(f"shipped noisy classifier {name!r} missing: {base + ext}; rebuild it with "
                                    "diffsolve.train.noisy_classifier.train_noisy_classifier and export_noisy_classifier")
    return base + ".json", base + ".safetensors"


@lru_cache(maxsize=None)
def noisy_classifier_meta(name: str = "mnist") -> dict[str, Any]:
    """What made the shipped classifier (its JSON: architecture, training, accuracy by level)."""
    with open(_files(name)[0]) as f:
        return json.load(f)


@lru_cache(maxsize=None)
def _state(name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(_files(name)[1])


def load_noisy_classifier(name: str = "mnist") -> nn.Module:
    """The shipped noise-conditional classifier: a new module each call, eval mode, float32, CPU,
    parameters frozen (the input gradient flows).  ``net(y, s) -> logits (B, 10)`` for canonical
    states ``y`` (B, 1, 28, 28) and levels ``s`` (a number or a (B,) tensor, s >= 0)."""
    meta = noisy_classifier_meta(name)
    if meta.get("arch") != "NoisyClassifier":
        raise ValueError(f"{_files(name)[0]}: unknown architecture {meta.get('arch')!r}; accepted: NoisyClassifier")
    net = NoisyClassifier(**meta["arch_kwargs"])
    net.load_state_dict({k: v.clone() for k, v in _state(name).items()})
    net = net.float().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net
