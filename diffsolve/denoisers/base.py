"""The Denoiser contract, plain-function denoisers and the wrapper base.

A :class:`Denoiser` is a callable ``D(y, s, **cond) -> x0_hat`` in canonical space (DESIGN.md):
``y = x / alpha``, ``s = sigma / alpha``.  ``s`` is one level for the whole batch (a Python
float, what a solver's grid gives) or a 1-D tensor with one level per row.

Besides ``denoise`` a Denoiser may offer:

* ``path``: the path it was trained on (the driver's default schedule range and range checks);
* ``prepare(levels, dtype)``: per-level constants computed once for a whole grid;
* ``check(y, cond)``: validation of the starting state and the conditioning, run once by the
  driver before the first call, which returns ``cond`` as the denoiser will receive it.  The
  base rule refuses keyword arguments the denoiser cannot take and states whose shape differs
  from ``shape`` (where the denoiser has one).

A :class:`DenoiserWrapper` changes what an inner denoiser returns (guidance, thresholding,
caching, ...) and forwards everything it does not change: ``path``, ``shape``,
``num_classes``, ``null_label``, ``class_names``, ``allow_extrapolation``, ``prepare``,
``check`` and any other attribute of the inner denoiser.  A wrapper receives levels as they
come (a float stays a float), so the inner network adapter keeps its per-level cache.

    >>> import torch
    >>> from diffsolve.denoisers import DenoiserWrapper, FunctionDenoiser
    >>> class Halved(DenoiserWrapper):
    ...     def denoise(self, y, s, **cond):
    ...         return 0.5 * self.inner(y, s, **cond)
    >>> inner = FunctionDenoiser(lambda y, s: y / (1 + s ** 2))
    >>> inner.shape = (2,)
    >>> h = Halved(inner)
    >>> h.shape, float(h(torch.ones(1, 2), 1.0)[0, 0])
    ((2,), 0.25)
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Protocol, runtime_checkable

import torch
from torch import Tensor

from ..paths import Path

__all__ = ["Denoiser", "DenoiserFn", "DenoiserWrapper", "FunctionDenoiser", "as_denoiser", "expand_s",
           "as_level", "accepted_keywords", "check_shape"]


@runtime_checkable
class DenoiserFn(Protocol):
    def __call__(self, y: Tensor, s: Tensor, **cond: Any) -> Tensor: ...


def expand_s(s: Tensor | float, y: Tensor) -> Tensor:
    """Noise levels as a 1-D tensor with one entry per batch row of ``y``."""
    if (isinstance(s, Tensor) and s.ndim == 1 and s.shape[0] == y.shape[0] and s.dtype == y.dtype
            and s.device == y.device):
        return s  # already in shape: the common case inside a sampling loop, kept cheap
    if isinstance(s, Tensor) and (s.is_complex() or not (s.is_floating_point() or s.dtype in _INT_DTYPES)):
        raise TypeError(f"noise level s must be real, got a tensor of dtype {s.dtype}")
    s = torch.as_tensor(s, dtype=y.dtype, device=y.device)
    if s.ndim == 0:
        s = s.expand(y.shape[0])
    if s.ndim != 1 or s.shape[0] != y.shape[0]:
        raise ValueError(f"noise level s must be a scalar or have shape ({y.shape[0]},), got {tuple(s.shape)}")
    return s


_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def as_level(s: Tensor | float, y: Tensor) -> Tensor | float:
    """A level as wrappers receive it: a Python float for one level shared by the batch (numbers
    and 0-dim CPU tensors), else a (B,) tensor (:func:`expand_s`)."""
    if isinstance(s, float):
        return s
    if isinstance(s, int) and not isinstance(s, bool):
        return float(s)
    if isinstance(s, Tensor) and s.ndim == 0 and s.device.type == "cpu" and s.is_floating_point():
        return float(s)
    return expand_s(s, y)


def accepted_keywords(fn: Callable, skip: int) -> frozenset[str] | None:
    """The keyword arguments ``fn`` accepts after its first ``skip`` positional parameters
    (None when it takes ``**kwargs`` or its signature cannot be read)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return frozenset(p.name for p in named[skip:])


def check_shape(y: Tensor, shape: tuple[int, ...] | None, who: str) -> None:
    """Refuse a state whose per-sample shape is not the denoiser's ``shape``."""
    if shape is not None and tuple(y.shape[1:]) != tuple(shape):
        raise ValueError(f"{who} takes samples of shape {tuple(shape)} (noise of shape (batch, "
                         f"{', '.join(map(str, shape))})), got noise of shape {tuple(y.shape)}")


def _check_keys(cond: dict, accepted: frozenset[str] | None, who: str) -> None:
    if accepted is None:
        return
    unknown = sorted(set(cond) - accepted)
    if unknown:
        raise TypeError(f"{who} takes no conditioning {', '.join(map(repr, unknown))}; "
                        f"accepted: {', '.join(sorted(accepted)) or 'none (it is unconditional)'}")


class Denoiser:
    """Base class for canonical-space denoisers.

    Subclasses implement :meth:`denoise` (``s`` arrives as a (B,) tensor).  ``path`` (optional)
    is the path the model was trained on; the driver uses it for default schedules and range
    checks.
    """

    path: Path | None = None

    def denoise(self, y: Tensor, s: Tensor, **cond: Any) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def __call__(self, y: Tensor, s: Tensor | float, **cond: Any) -> Tensor:
        return self.denoise(y, expand_s(s, y), **cond)

    @property
    def s_range(self) -> tuple[float, float] | None:
        p = self.path
        return None if p is None else (p.s_min, p.s_max)

    def prepare(self, levels: Tensor, dtype: torch.dtype = torch.float64) -> None:
        """Per-level constants for a whole grid, computed before the loop (none by default)."""

    def accepted_cond(self) -> frozenset[str] | None:
        """Conditioning keys this denoiser takes (None: it cannot tell, anything is passed on)."""
        return accepted_keywords(self.denoise, skip=2)

    def describe_self(self) -> str:
        """How errors name this denoiser (its class by default)."""
        return type(self).__name__

    def check(self, y: Tensor, cond: dict[str, Any]) -> dict[str, Any]:
        """Validate the starting state ``y`` and the conditioning once before sampling; return the
        conditioning as the denoiser will receive it."""
        who = self.describe_self()
        check_shape(y, getattr(self, "shape", None), who)
        _check_keys(cond, self.accepted_cond(), who)
        return cond


class FunctionDenoiser(Denoiser):
    """Wrap a plain function ``D(y, s, **cond)`` (already in canonical space)."""

    def __init__(self, fn: Callable[..., Tensor], path: Path | None = None):
        if not callable(fn):
            raise TypeError(f"FunctionDenoiser needs a callable D(y, s, **cond), got {type(fn).__name__}")
        self.fn, self.path = fn, path

    def denoise(self, y, s, **cond):
        return self.fn(y, s, **cond)

    def accepted_cond(self) -> frozenset[str] | None:
        return accepted_keywords(self.fn, skip=2)


class DenoiserWrapper(Denoiser):
    """A Denoiser around another one that forwards everything it does not change.

    Subclasses implement ``denoise(y, s, **cond)`` calling ``self.inner``; ``s`` arrives as it
    was given (a Python float for one level, else a (B,) tensor): pass it on unchanged so that
    the inner network adapter uses its per-level cache.  Attributes the wrapper does not define
    (``shape``, ``num_classes``, ``null_label``, ``class_names``, ``allow_extrapolation``,
    ``value_range``, ``meta``, ``net`` ...) are read from the inner denoiser; ``path``,
    ``prepare`` and ``check`` are forwarded explicitly.
    """

    def __init__(self, inner: Denoiser | Callable[..., Tensor]):
        self.inner = as_denoiser(inner)

    def __getattr__(self, name: str) -> Any:
        # only reached for attributes this object does not have
        if name.startswith("__") or name == "inner":
            raise AttributeError(name)
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)

    @property
    def path(self) -> Path | None:  # type: ignore[override]
        return self.inner.path

    def __call__(self, y: Tensor, s: Tensor | float, **cond: Any) -> Tensor:
        return self.denoise(y, as_level(s, y), **cond)

    def denoise(self, y: Tensor, s: Tensor | float, **cond: Any) -> Tensor:
        return self.inner(y, s, **cond)

    def prepare(self, levels: Tensor, dtype: torch.dtype = torch.float64) -> None:
        self.inner.prepare(levels, dtype)

    def accepted_cond(self) -> frozenset[str] | None:
        return self.inner.accepted_cond()

    def check(self, y: Tensor, cond: dict[str, Any]) -> dict[str, Any]:
        return self.inner.check(y, cond)


def as_denoiser(obj: Any) -> Denoiser:
    """Accept a Denoiser or a plain ``D(y, s)`` function."""
    if isinstance(obj, Denoiser):
        return obj
    if callable(obj):
        return FunctionDenoiser(obj)
    raise TypeError(f"expected a Denoiser or a callable D(y, s, **cond), got {type(obj).__name__}")
