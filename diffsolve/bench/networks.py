"""The network a sweep samples, by model name: an exact mixture's network on the sweep's path, or
a trained model's own network (in its own precision), with its class conditioning bound.

    >>> from diffsolve.bench.networks import model_network
    >>> model, net, path, prediction, exact = model_network("gmm-2d", "ddpm-linear", "eps")
    >>> path.name, prediction, exact
    ('ddpm-linear', 'eps', True)
"""

from __future__ import annotations

import contextlib
from functools import lru_cache
from typing import Any, Callable, Iterator

import torch
from torch import Tensor

from ..models import load_model
from ..models.gmm import BUILTINS
from ..paths import Path, get_path

__all__ = ["model_network", "model_path_prediction", "cond_for", "BoundNet", "InDtype", "one_thread"]


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run with one intra-op thread: results then do not depend on the machine's thread count
    (serial and Ray runs agree bit for bit)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class InDtype:
    """A trained network run in its own precision (e.g. float32 weights) whatever the caller's
    state dtype (float64 here, float32 in some peers); the output comes back in the input's dtype."""

    def __init__(self, net: Callable[..., Tensor], dtype: torch.dtype | None):
        self.net, self.dtype = net, dtype

    def __call__(self, x: Tensor, t: Tensor | float, **kw: Any) -> Tensor:
        if self.dtype is None or x.dtype == self.dtype:
            return self.net(x, t, **kw)
        t = t.to(self.dtype) if isinstance(t, Tensor) else t
        return self.net(x.to(self.dtype), t, **kw).to(x.dtype)


@lru_cache(maxsize=8)
def model_network(name: str, path: str, prediction: str) -> tuple[Any, Callable[..., Tensor], Path, str, bool]:
    """(model, network, path object, prediction, exact?) for a model name: an exact mixture's
    network is built on ``path`` with ``prediction``; a trained model keeps its own."""
    if name in BUILTINS:
        g = load_model(name)
        p = get_path(path)
        return g, g.network(p, prediction), p, prediction, True
    m = load_model(name)
    net = getattr(m, "net", None)
    if net is None:
        raise ValueError(f"model {name!r} exposes no network (.net); the benchmark needs one")
    return m, InDtype(net, getattr(m, "net_dtype", None)), m.path, m.prediction, False


def model_path_prediction(name: str, path: str, prediction: str) -> tuple[str, str]:
    """The path and prediction a model is sampled with: the sweep's for an exact mixture (its
    network can be built on any path), the checkpoint's own for a trained model."""
    _, _, p, pred, _ = model_network(name, path, prediction)
    return p.name, pred


def cond_for(model: Any, batch: int) -> dict[str, Tensor]:
    """The conditioning of a batch: labels 0, 1, ... cycled for a class-conditional model."""
    k = getattr(model, "num_classes", None)
    if k:
        return {"labels": torch.arange(batch) % int(k)}
    return {}


class BoundNet:
    """A network with its conditioning bound (peers call ``net(x, t)``)."""

    def __init__(self, net: Callable[..., Tensor], cond: dict[str, Any]):
        self.net, self.cond = net, cond

    def __call__(self, x: Tensor, t: Tensor | float, **kw: Any) -> Tensor:
        return self.net(x, t, **self.cond, **kw)
