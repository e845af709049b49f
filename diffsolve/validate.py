"""Checks of the driver's arguments: every bad value is refused here, before any network call,
with a message that names the argument, the value and what would work.

    >>> import numpy as np
    >>> check_nfe(np.int64(10))
    10
    >>> check_nfe(True)
    Traceback (most recent call last):
    ...
    diffsolve.solvers.base.NFEError: nfe must be a positive integer or None, got True (a bool)
"""

from __future__ import annotations

import inspect
import numbers
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from .noise import check_seeds as noise_seeds
from .solvers.base import NFEError

__all__ = ["MAX_NFE", "check_nfe", "check_state_tensor", "check_dtype", "check_cond", "check_hooks",
           "check_seeds", "as_int"]

#: the largest budget the driver accepts: more network calls than any sampler needs (DDPM's
#: ancestral sampler uses 1000); a larger value is almost always a typo and would run for days
MAX_NFE = 100_000


def as_int(value: Any) -> int | None:
    """``value`` as a Python int when it is an integer (Python, numpy or a 0-dim integer tensor;
    not a bool), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, Tensor) and value.ndim == 0 and not value.is_floating_point() \
            and not value.is_complex() and value.dtype != torch.bool:
        return int(value)
    return None


def check_nfe(nfe: Any) -> int | None:
    """A budget of network calls: a positive integer up to :data:`MAX_NFE`, or None."""
    if nfe is None:
        return None
    n = as_int(nfe)
    if n is None:
        kind = "a bool" if isinstance(nfe, bool) else f"a {type(nfe).__name__}"
        raise NFEError(f"nfe must be a positive integer or None, got {nfe!r} ({kind})")
    if n < 1:
        raise NFEError(f"nfe must be a positive integer, got {n}")
    if n > MAX_NFE:
        raise NFEError(f"nfe={n} is more than the {MAX_NFE} network calls the driver accepts; "
                         f"fast solvers need 5-50")
    return n


def check_state_tensor(name: str, x: Any, like: Tensor | None = None) -> Tensor:
    """A real floating tensor of shape (batch >= 1, ...) with finite values (``like``: the shape
    it must have)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch tensor of shape (batch, ...), got {type(x).__name__}")
    if x.is_complex() or not x.is_floating_point():
        raise TypeError(f"{name} must be a real floating tensor (float16/bfloat16/float32/float64), "
                        f"got dtype {x.dtype}")
    if x.device.type == "meta":
        raise ValueError(f"{name} is on the 'meta' device (it has no values); give a tensor on the CPU or an accelerator")
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"{name} must have shape (batch, ...) with batch >= 1, got {tuple(x.shape)}")
    if like is not None and x.shape != like.shape:
        raise ValueError(f"{name} has shape {tuple(x.shape)}, noise {tuple(like.shape)}: they must match")
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        rows = torch.nonzero(bad.reshape(x.shape[0], -1).any(1)).flatten().tolist()
        raise ValueError(f"{name} contains NaN or inf (rows {rows[:8]}{' ...' if len(rows) > 8 else ''})")
    return x


def check_dtype(dtype: Any) -> torch.dtype | None:
    """The state's dtype: None or a real floating torch dtype."""
    if dtype is None:
        return None
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a real floating torch dtype (torch.float64, torch.float32, ...) "
                        f"or None, got {dtype!r}")
    return dtype


def check_cond(cond: Any) -> dict[str, Any]:
    """None or a dict of keyword arguments (string keys) for the denoiser."""
    if cond is None:
        return {}
    if not isinstance(cond, dict):
        raise TypeError(f"cond must be a dict of keyword arguments for the denoiser (e.g. "
                        f"{{'labels': labels}}), got {type(cond).__name__}")
    bad = [k for k in cond if not isinstance(k, str) or not k.isidentifier()]
    if bad:
        raise TypeError(f"cond keys must be keyword-argument names, got {bad!r}")
    return dict(cond)


def _takes_one_argument(fn: Callable) -> bool:
    """Whether ``fn(ctx)`` is a valid call by its signature (True when it cannot be read)."""
    try:
        inspect.signature(fn).bind(None)
    except TypeError:
        return False
    except ValueError:
        return True
    return True


def check_hooks(hooks: Any) -> tuple[Callable, ...]:
    """A sequence of callables ``hook(ctx) -> SolverState | None``."""
    if callable(hooks):
        raise TypeError("hooks must be a list of callables; wrap a single hook as hooks=[hook]")
    if not isinstance(hooks, Sequence) or isinstance(hooks, (str, bytes)):
        raise TypeError(f"hooks must be a list of callables hook(ctx) -> SolverState | None, "
                        f"got {type(hooks).__name__}")
    for k, h in enumerate(hooks):
        if not callable(h):
            raise TypeError(f"hooks[{k}] is not callable (got {type(h).__name__})")
        if not _takes_one_argument(h):
            raise TypeError(f"hooks[{k}] ({getattr(h, '__qualname__', type(h).__name__)}) cannot be called with "
                            f"one argument; a hook is hook(ctx) -> SolverState | None")
    return tuple(hooks)


def check_seeds(seeds: Any, batch: int) -> list[int]:
    """One seed per sample, each an integer in [0, 2**63) (:func:`diffsolve.noise.check_seeds`)."""
    seeds = noise_seeds(seeds)
    if len(seeds) != batch:
        raise ValueError(f"{len(seeds)} seeds for a batch of {batch}: give one seed per sample")
    return seeds
