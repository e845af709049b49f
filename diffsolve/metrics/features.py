"""The MNIST feature network we train and ship: a small CNN classifier whose penultimate layer
(128 ReLU units) gives the features of the Frechet distance, whose last conv block (576 values)
gives those of k-NN precision/recall, and whose output gives the class accuracy of conditional
samples.

The weights live in the package (``diffsolve/metrics/weights/mnist_cnn.safetensors``, about
0.4 MB) and load without the internet; ``scripts/train_feature_net.py`` reproduces them (and the
shipped MNIST test-set feature statistics) on one CPU thread in a few minutes.

Images are MNIST-shaped, ``(N, 1, 28, 28)`` (or ``(N, 28, 28)``), with values in [-1, 1] as
:func:`diffsolve.data.mnist` returns them; by default they are clamped to [-1, 1] first, as
saving a sample as a picture would do.

Example::

    >>> from diffsolve.data import mnist
    >>> from diffsolve.metrics import features, classify
    >>> x, y = mnist("test")
    >>> features(x[:4]).shape
    torch.Size([4, 128])
    >>> bool((classify(x[:100]) == y[:100]).float().mean() >= 0.98)
    True
"""

from __future__ import annotations

import os
from functools import lru_cache

import torch
from torch import Tensor, nn

__all__ = ["MnistNet", "feature_net", "features", "layer_outputs", "LAYERS", "logits", "classify", "class_accuracy",
           "check_images", "check_labels", "WEIGHTS_DIR", "FEATURE_DIM", "shipped_file"]

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
WEIGHTS_FILE = "mnist_cnn.safetensors"
FEATURE_DIM = 128


class MnistNet(nn.Module):
    """Three 3x3 conv blocks (16, 32, 64 channels; ReLU; 2x2 max-pool: 28 -> 14 -> 7 -> 3), a
    128-unit ReLU layer (the features) and a linear 10-way classifier on top (dropout 0.3 before
    it during training)."""

    def __init__(self, width: int = 16, feature_dim: int = FEATURE_DIM, classes: int = 10):
        super().__init__()
        c1, c2, c3 = width, 2 * width, 4 * width
        self.conv = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.fc = nn.Linear(c3 * 3 * 3, feature_dim)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(feature_dim, classes)

    def layers(self, x: Tensor) -> dict[str, Tensor]:
        """All three readouts of one forward pass: ``conv`` (N, 576) the flattened last conv block,
        ``penultimate`` (N, feature_dim) and ``logits`` (N, classes) (dropout is off in eval)."""
        conv = self.conv(x).flatten(1)
        feat = torch.relu(self.fc(conv))
        return {"conv": conv, "penultimate": feat, "logits": self.head(self.drop(feat))}

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)["logits"]


def shipped_file(name: str, what: str) -> str:
    """The path of a file shipped in ``WEIGHTS_DIR``; a missing one says how to rebuild it."""
    path = os.path.join(WEIGHTS_DIR, name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"shipped {what} missing: {path}; "
                                "rebuild with: python scripts/train_feature_net.py")
    return path


@lru_cache(maxsize=1)
def feature_net() -> MnistNet:
    """The shipped, trained network (eval mode, float32, CPU), loaded once."""
    from safetensors.torch import load_file

    path = shipped_file(WEIGHTS_FILE, "feature-network weights")
    net = MnistNet()
    net.load_state_dict(load_file(path))
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def check_images(images: Tensor, clamp: bool = True) -> Tensor:
    """Validate MNIST-shaped images and return them as float32 (N, 1, 28, 28), clamped to
    [-1, 1] if ``clamp``. Raises ValueError naming the bad shape or the non-finite count."""
    images = torch.as_tensor(images)
    if images.dim() == 3 and tuple(images.shape[1:]) == (28, 28):
        images = images[:, None]
    if images.dim() != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        raise ValueError(f"expected MNIST images of shape (N, 1, 28, 28) or (N, 28, 28) in [-1, 1], "
                         f"got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"expected floating-point images in [-1, 1], got dtype {images.dtype}")
    bad = int((~torch.isfinite(images)).sum())
    if bad:
        raise ValueError(f"images contain {bad} non-finite values (NaN or inf)")
    images = images.detach().to("cpu", torch.float32)
    return images.clamp(-1, 1) if clamp else images


LAYERS = ("penultimate", "conv", "logits")


def layer_outputs(images: Tensor, layers: tuple[str, ...] = LAYERS, clamp: bool = True,
                  batch: int = 1000) -> dict[str, Tensor]:
    """Several readouts of the shipped network from one pass over the images: any of
    ``penultimate`` (N, 128), ``conv`` (N, 576) and ``logits`` (N, 10), float32."""
    bad = [name for name in layers if name not in LAYERS]
    if bad:
        raise ValueError(f"unknown layer(s) {bad}; accepted: {', '.join(LAYERS)}")
    images = check_images(images, clamp)
    net = feature_net()
    parts: dict[str, list[Tensor]] = {name: [] for name in layers}
    with torch.no_grad():
        for i in range(0, max(images.shape[0], 1), batch):
            out = net.layers(images[i:i + batch])
            for name in layers:
                parts[name].append(out[name])
    return {name: torch.cat(v) for name, v in parts.items()}


def features(images: Tensor, layer: str = "penultimate", clamp: bool = True, batch: int = 1000) -> Tensor:
    """Features of MNIST images in [-1, 1], float32: the 128 penultimate ReLU units (default; the
    Frechet-distance features) or ``layer="conv"``, the 576 flattened activations of the last
    conv block (the precision/recall features: they keep spatial information that the
    classifier's penultimate layer discards).

    >>> import torch
    >>> features(torch.zeros(2, 1, 28, 28) - 1).shape
    torch.Size([2, 128])
    >>> features(torch.zeros(2, 1, 28, 28) - 1, layer="conv").shape
    torch.Size([2, 576])
    """
    return layer_outputs(images, (layer,), clamp, batch)[layer]


def logits(images: Tensor, clamp: bool = True, batch: int = 1000) -> Tensor:
    """Class logits (N, 10) of MNIST images in [-1, 1]."""
    return layer_outputs(images, ("logits",), clamp, batch)["logits"]


def classify(images: Tensor, clamp: bool = True) -> Tensor:
    """Predicted digit (N,) int64 of MNIST images in [-1, 1]."""
    return logits(images, clamp).argmax(1)


def class_accuracy(images: Tensor, labels: Tensor) -> float:
    """Fraction of images the shipped classifier assigns to their label (e.g. the class a
    conditional sampler was asked for).

    >>> from diffsolve.data import mnist
    >>> x, y = mnist("test")
    >>> class_accuracy(x[:200], y[:200]) >= 0.98
    True
    """
    labels = check_labels(labels, torch.as_tensor(images).shape[0])
    return float((classify(images) == labels).double().mean())


def check_labels(labels: Tensor, n: int) -> Tensor:
    """Validate n digit labels (0..9) and return them as int64 (n,)."""
    labels = torch.as_tensor(labels).reshape(-1).long()
    if labels.shape[0] != n:
        raise ValueError(f"{n} images but {labels.shape[0]} labels")
    if n == 0:
        raise ValueError("need at least one image")
    if bool(((labels < 0) | (labels > 9)).any()):
        raise ValueError(f"labels must be digits 0..9, got values in [{int(labels.min())}, {int(labels.max())}]")
    return labels
