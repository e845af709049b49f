"""The shipped steering verifier: a second MNIST classifier whose input gradient steers samples
toward a class, so that steered samples are judged by a network they were not steered by (the
metric network, :mod:`diffsolve.metrics.features`).  Architecture and training:
:mod:`diffsolve.nets.verifier`, :mod:`diffsolve.train.verifier`; weights
``diffsolve/models/weights/mnist-verifier.safetensors`` (+ ``.json``: what made them).

    >>> import torch, diffsolve
    >>> reward = classifier_reward(diffsolve.load("mnist"), 3)
    >>> reward.name
    'class:3'
    >>> reward(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2])
"""

from __future__ import annotations

import numbers
from typing import Any

import torch
from torch import nn

from ..nets.verifier import ResidualVerifier
from .shipped_nets import ShippedNets

__all__ = ["load_verifier", "verifier_meta", "classifier_reward", "class_rewards", "VERIFIERS"]

#: accepted verifier names -> the shipped files' name in WEIGHTS_DIR
VERIFIERS = {"mnist": "mnist-verifier"}
_SHAPES = {"mnist": (1, 28, 28)}
_ARCHS = {"ResidualVerifier": ResidualVerifier}


_NETS = ShippedNets("verifier", VERIFIERS, _ARCHS, rebuild="diffsolve train-verifier --out runs/verifier --export")


def verifier_meta(name: str = "mnist") -> dict[str, Any]:
    """What made the shipped verifier ``name`` (its JSON: architecture kwargs, seed, steps, test
    accuracy, training seconds, torch version)."""
    return _NETS.meta(name)


def load_verifier(name: str = "mnist") -> nn.Module:
    """The shipped steering verifier ``name`` (``"mnist"``): a new module each call, eval mode,
    float32, CPU, parameters frozen (its *input* gradient still flows).  Input: images
    ``(B, 1, 28, 28)`` in [-1, 1]; output: logits ``(B, 10)``."""
    return _NETS.load(name)


#: the smoothing of the shipped steering reward (``class:N``): sigma and draws of
#: :class:`diffsolve.rewards.Smoothed`.  Measured (docs/steer.md, 50 steered samples, TDS K = 4,
#: lam = 4): unsmoothed 90% metric-network accuracy, FD 92.7; smoothed 96%, FD 76.1.
SMOOTHING = (0.3, 8)


def classifier_reward(prior: Any, label: int, smoothing: tuple[float, int] | None = SMOOTHING):
    """``log p(label | x0)`` under the shipped verifier, as a
    :class:`diffsolve.rewards.ClassifierReward` named ``class:LABEL``, for a prior of MNIST's
    shape (1, 28, 28) (e.g. ``diffsolve.load("mnist")``).  ``label``: a digit 0..9.  The verifier
    reads x0 clamped to [-1, 1], as the metric network and an image file do.  By default the
    reward is the verifier's Gaussian smoothing (:data:`SMOOTHING`: noise 0.3, the largest it
    was trained on, 8 fixed draws; :class:`diffsolve.rewards.Smoothed`): on unconditional samples
    the verifier and the metric network agree on 74% only, and steering the raw verifier finds
    its non-robust features; ``smoothing=None`` gives the raw ``log p(label | x0)``.

    >>> import torch
    >>> classifier_reward(torch.zeros(1), 3)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: a steering classifier ships for MNIST priors only ...
    """
    from ..rewards import ClassifierReward, Smoothed

    shape = getattr(prior, "shape", None)
    try:
        shape = tuple(int(s) for s in shape) if shape is not None else None
    except TypeError:
        shape = None
    if shape != _SHAPES["mnist"]:
        raise ValueError(f"a steering classifier ships for MNIST priors only (data shape (1, 28, 28)); this prior's "
                         f"shape is {shape}; for other data pass your own classifier: "
                         "diffsolve.rewards.ClassifierReward(your_net, label)")
    if isinstance(label, bool) or not isinstance(label, numbers.Integral) or not 0 <= label <= 9:
        raise ValueError(f"label must be a digit class, an int in 0..9, got {label!r}")
    label = int(label)
    raw = ClassifierReward(load_verifier("mnist"), label, transform=_image_range, name=f"class:{label}")
    if smoothing is None:
        return raw
    sigma, draws = smoothing
    r = Smoothed(raw, sigma, draws)
    r.name = f"class:{label}"
    return r


def class_rewards(prior: Any, labels: torch.Tensor):
    """One class reward per row: row b is scored by :func:`classifier_reward` of ``labels[b]``
    (a :class:`diffsolve.rewards.RowRewards` over the ten classes), for guiding a batch toward
    several labels at once.

    >>> import torch, diffsolve
    >>> r = class_rewards(diffsolve.load("mnist"), torch.tensor([3, 7]))
    >>> r(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2])
    """
    from ..rewards import RowRewards

    return RowRewards([classifier_reward(prior, c) for c in range(10)], labels)


def _image_range(x: torch.Tensor) -> torch.Tensor:
    """What an image file (and the metric network) holds: values clamped to the data range
    [-1, 1], so that a steered sample cannot raise its reward with ink outside that range."""
    return x.clamp(-1.0, 1.0)
