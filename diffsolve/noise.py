"""Per-sample noise: a counter-based Gaussian source keyed by one integer seed per sample.

The noise of one sample at one step depends only on that sample's seed, the step and a draw
index, never on the batch around it: re-indexing particles (SMC) is re-indexing the seeds, and
a sample reproduces bit for bit in any batch, on any device.

Seeds are integers in ``[0, 2**63)``: Python ints, numpy integers or integer 0-dim tensors
(or an integer 1-D tensor of them).  Anything else (bools, floats, even ``2.0``, strings,
negative or too large numbers) is refused with an error naming the seed and its position,
instead of being truncated or wrapped mod 2**64.

    >>> import torch
    >>> src = NoiseSource([3, 7])
    >>> a = src.normal(0, torch.empty(2, 5, dtype=torch.float64))
    >>> b = NoiseSource([7]).normal(0, torch.empty(1, 5, dtype=torch.float64))
    >>> bool((a[1] == b[0]).all())
    True
    >>> NoiseSource([0, 1.5])
    Traceback (most recent call last):
    ...
    ValueError: seeds[1] = 1.5 is not an integer; seeds must be integers in [0, 2**63)
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Sequence

import torch
from torch import Tensor

__all__ = ["NoiseSource", "check_seeds", "SEED_RANGE"]

#: what a seed may be, for error messages
SEED_RANGE = "integers in [0, 2**63)"


def _signed(u: int) -> int:
    """The int64 bit pattern of an unsigned 64-bit integer."""
    u &= 0xFFFFFFFFFFFFFFFF
    return u - (1 << 64) if u >= 1 << 63 else u


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_M1, _M2 = _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)


def _srl(x: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 bit patterns."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def _mix(x: Tensor) -> Tensor:
    """splitmix64 (Steele, Lea & Flood 2014) on int64 tensors; multiplication wraps mod 2^64."""
    x = x + _GOLDEN
    x = (x ^ _srl(x, 30)) * _M1
    x = (x ^ _srl(x, 27)) * _M2
    return x ^ _srl(x, 31)


def _as_seed(value: Any, pos: int) -> int:
    """One seed as a Python int, or a ValueError naming it and its position."""
    v = value
    if isinstance(v, Tensor):
        if v.ndim != 0 or v.dtype == torch.bool or v.dtype.is_floating_point or v.dtype.is_complex:
            raise ValueError(f"seeds[{pos}] = {value!r} is not an integer; seeds must be {SEED_RANGE}")
        v = v.item()
    # bool is an int subclass (and numpy's bool_ is not numbers.Integral): refuse it explicitly
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise ValueError(f"seeds[{pos}] = {value!r} is not an integer; seeds must be {SEED_RANGE}")
    v = int(v)
    if not 0 <= v < 1 << 63:
        raise ValueError(f"seeds[{pos}] = {v} is out of range; seeds must be {SEED_RANGE}")
    return v


def check_seeds(seeds: Sequence[int] | Tensor) -> list[int]:
    """The seeds as a list of Python ints in ``[0, 2**63)``; a ValueError names the first bad one.

    >>> import numpy as np, torch
    >>> check_seeds([1, np.int64(2), torch.tensor(3)])
    [1, 2, 3]
    >>> check_seeds([True])
    Traceback (most recent call last):
    ...
    ValueError: seeds[0] = True is not an integer; seeds must be integers in [0, 2**63)
    """
    if isinstance(seeds, Tensor):
        if seeds.ndim != 1:
            raise ValueError(f"seeds must be a 1-D sequence of {SEED_RANGE}, got a tensor of shape "
                             f"{tuple(seeds.shape)}")
        seeds = list(seeds.unbind(0))
    elif isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise ValueError(f"seeds must be a sequence of {SEED_RANGE}, got {seeds!r}")
    return [_as_seed(v, k) for k, v in enumerate(seeds)]


class NoiseSource:
    """Counter-based per-sample Gaussian noise.

    ``normal(step, like, draw)`` returns for every row b a standard normal tensor that depends
    only on ``(seeds[b], step, draw)`` and the element index: a sample's noise is the same
    whatever batch it is in, and re-indexing particles (SMC) is re-indexing ``seeds``
    (:meth:`index`).

    The generator is a pure function, vectorised over the batch and run on the sample's own
    device: each element's 64 random bits are splitmix64 of (seed, step, draw, element index),
    turned into uniforms with 53-bit resolution and into normals by Box-Muller. No generator
    state, no per-sample Python loop, no host synchronisation.
    """

    def __init__(self, seeds: Sequence[int] | Tensor):
        self.seeds = check_seeds(seeds)
        self._keys = _mix(torch.tensor(self.seeds, dtype=torch.int64))
        self._on: dict[torch.device, Tensor] = {}

    def __len__(self) -> int:
        return len(self.seeds)

    def __repr__(self) -> str:
        return f"NoiseSource({self.seeds!r})"

    def index(self, idx: Tensor | Sequence[int]) -> "NoiseSource":
        """The source of the rows ``idx`` (selected or repeated): row k gets ``seeds[idx[k]]``."""
        rows = idx.tolist() if isinstance(idx, Tensor) else list(idx)
        return NoiseSource([self.seeds[int(i)] for i in rows])

    def _keys_on(self, device: torch.device) -> Tensor:
        if device not in self._on:
            self._on[device] = self._keys.to(device)
        return self._on[device]

    def normal(self, step: int, like: Tensor, draw: int = 0) -> Tensor:
        """Standard normal noise shaped and typed like ``like``, one row per seed."""
        if like.shape[0] != len(self.seeds):
            raise ValueError(f"noise source has {len(self.seeds)} seeds but the batch has {like.shape[0]} rows")
        n = math.prod(like.shape[1:])
        m = (n + 1) // 2
        u = self._uniforms(step, draw, 2 * m, like.device)
        r = torch.sqrt(-2.0 * torch.log(u[:, :m]))
        phi = (2 * math.pi) * u[:, m:]
        z = torch.cat([r * torch.cos(phi), r * torch.sin(phi)], 1)[:, :n]
        return z.reshape(like.shape).to(like.dtype)

    def uniform(self, step: int, shape: Sequence[int], draw: int = 0, device: Any = "cpu") -> Tensor:
        """Float64 uniforms in (0, 1) of shape ``(len(seeds), *shape)``, one row per seed, a pure
        function of ``(seeds[b], step, draw)`` and the element index (the discrete samplers'
        randomness: Gumbel and Bernoulli draws in float64)."""
        n = math.prod(shape)
        return self._uniforms(step, draw, n, torch.device(device)).reshape(len(self.seeds), *shape)

    def _uniforms(self, step: int, draw: int, n: int, device: torch.device) -> Tensor:
        """(B, n) float64 uniforms in (0, 1) with 53-bit resolution."""
        base = _mix(_mix(self._keys_on(device) ^ _signed(step + 1)) ^ _signed(draw + 7))  # (B,)
        j = torch.arange(n, dtype=torch.int64, device=device) * _GOLDEN
        bits = _mix(base[:, None] ^ j[None, :])  # (B, n)
        return (_srl(bits, 11).to(torch.float64) + 0.5) * 2.0**-53

    @classmethod
    def initial(cls, seeds: Sequence[int], shape: Sequence[int], dtype=torch.float64, device="cpu") -> Tensor:
        """Standard normal starting noise of shape (len(seeds), *shape), one seed per sample."""
        src = cls(seeds)
        like = torch.empty(len(src), *shape, dtype=dtype, device=device)
        return src.normal(-1, like)
