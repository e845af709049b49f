"""The shared kit of every solver file: each piece of arithmetic or rule written once.

* levels and step sizes (Python floats, never tensors): ``lambda = -log s``,
  :func:`step_size` ``h = lambda_{i+1} - lambda_i = log(s_i / s_{i+1})``, :func:`level_at`
  the level ``s e^{-r h}`` at ``lambda + r h``;
* :func:`eps_of`: the noise prediction ``eps = (y - D) / s`` that a denoised output implies;
* :func:`bc`: broadcast a scalar or a per-row level against a batch;
* the multistep order rule (:func:`multistep_order`, :func:`check_lower_order_final`);
* option validators (:func:`check_int`, :func:`check_number`, :func:`check_bool`,
  :func:`check_choice`) that every solver's ``__init__`` uses, so that ``order=True``,
  ``eta="a"`` or ``r1=nan`` are refused with an error naming the solver, the option, the value
  and what is accepted.

This module imports nothing from the package: every solver file may import it.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Sequence

import torch
from torch import Tensor

__all__ = ["bc", "step_size", "level_at", "eps_of", "LOWER_ORDER_FINAL_BELOW", "multistep_order",
           "check_lower_order_final", "check_int", "check_number", "check_bool", "check_choice"]


# -- levels ------------------------------------------------------------------------------
def step_size(s: float, s_next: float) -> float:
    """h = lambda(s_next) - lambda(s) = log(s / s_next), lambda = -log s (inf when s_next = 0).

    >>> round(step_size(2.0, 1.0), 12)
    0.69314718056
    """
    return math.inf if s_next == 0 else math.log(s / s_next)


def level_at(s: float, h: float, r: float) -> float:
    """The level at lambda_s + r h, i.e. ``s e^{-r h}`` (strictly inside the step for 0 < r < 1)."""
    return s * math.exp(-r * h)


def bc(v: Tensor | float, y: Tensor) -> Tensor | float:
    """Broadcast a scalar or per-row tensor against a batch ``y``.  Scalars (numbers and 0-dim
    CPU tensors such as grid levels) come back as Python floats: no tensor is built for them."""
    if isinstance(v, (int, float)):
        return v
    if isinstance(v, Tensor) and v.ndim == 0 and v.device.type == "cpu":
        return v.item()
    v = torch.as_tensor(v, dtype=y.dtype, device=y.device)
    if v.ndim == 0:
        return v
    return v.reshape(v.shape[0], *([1] * (y.ndim - 1)))


def eps_of(y: Tensor, d: Tensor, s: Tensor | float) -> Tensor:
    """The noise prediction eps = (y - D) / s that the denoised output D implies at level s
    (y = x0 + s eps in canonical space)."""
    return (y - d) / bc(s, y)


# -- the multistep order rule ---------------------------------------------------------------
#: diffusers' threshold: ``lower_order_final`` applies to runs of fewer steps than this
LOWER_ORDER_FINAL_BELOW = 15


def check_lower_order_final(value: bool | str, owner: str = "solver") -> bool | str:
    """Validate a ``lower_order_final`` option: True, False or ``"last"``."""
    if not (value is True or value is False or (isinstance(value, str) and value == "last")):
        raise _refuse(owner, "lower_order_final", value, "True, False or 'last'")
    return value


def multistep_order(i: int, n_steps: int, order: int, lower_order_final: bool | str, to_zero: bool,
                    below: int | None = LOWER_ORDER_FINAL_BELOW) -> int:
    """The order a multistep method uses at step ``i`` of ``n_steps``.

    Warm-up ``min(order, i + 1)``.  When the run has fewer than ``below`` steps (``below=None``:
    always, UniPC's rule), ``lower_order_final=True`` also caps the order at ``n_steps - i``
    (last step first order, second-to-last at most second: diffusers' rule), and
    ``lower_order_final="last"`` makes only the last step first order (for grids that end at
    s_min > 0 with one long step, where the second-to-last step is short and can keep its
    order).  A step to s = 0 is first order.

    >>> [multistep_order(i, 5, 3, True, i == 4) for i in range(5)]
    [1, 2, 3, 2, 1]
    >>> [multistep_order(i, 5, 3, "last", False) for i in range(5)]
    [1, 2, 3, 3, 1]
    >>> [multistep_order(i, 20, 3, True, False) for i in (0, 1, 2, 18, 19)]
    [1, 2, 3, 3, 3]
    """
    if to_zero:
        return 1
    k = min(order, i + 1)
    if lower_order_final and (below is None or n_steps < below):
        if lower_order_final != "last":
            k = min(k, n_steps - i)
        elif i == n_steps - 1:
            k = 1
    return k


# -- option validators ----------------------------------------------------------------------
def _refuse(owner: str, name: str, value: Any, accepted: str) -> ValueError:
    return ValueError(f"{owner}: {name}={value!r} is not accepted; accepted: {accepted}")


def check_int(owner: str, name: str, value: Any, choices: Sequence[int] | None = None,
              minimum: int = 1) -> int:
    """An integer option (numpy integers accepted, bools refused), one of ``choices`` if given,
    else at least ``minimum``.

    >>> check_int("unipc", "order", True, (1, 2, 3))
    Traceback (most recent call last):
    ...
    ValueError: unipc: order=True is not accepted; accepted: 1, 2, 3
    """
    accepted = ", ".join(map(str, choices)) if choices is not None else f"an integer >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _refuse(owner, name, value, accepted)
    v = int(value)
    if (choices is not None and v not in choices) or (choices is None and v < minimum):
        raise _refuse(owner, name, value, accepted)
    return v


def check_number(owner: str, name: str, value: Any, low: float = -math.inf, high: float = math.inf,
                 low_open: bool = False, high_open: bool = False) -> float:
    """A finite real option in the interval from ``low`` to ``high`` (open ends as flagged);
    bools, strings, complex numbers and NaN are refused.

    >>> check_number("dpm-solver-2", "r1", float("nan"), 0, 1, low_open=True)
    Traceback (most recent call last):
    ...
    ValueError: dpm-solver-2: r1=nan is not accepted; accepted: a finite number in (0, 1]
    """
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low == -math.inf and high == math.inf:
        accepted = "a finite number"
    elif high == math.inf:
        accepted = f"a finite number {'>' if low_open else '>='} {low:g}"
    else:
        accepted = f"a finite number in {interval}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _refuse(owner, name, value, accepted)
    v = float(value)
    ok = (math.isfinite(v) and (v > low if low_open else v >= low) and (v < high if high_open else v <= high))
    if not ok:
        raise _refuse(owner, name, value, accepted)
    return v


def check_bool(owner: str, name: str, value: Any) -> bool:
    """A True/False option (1, 0, "yes" refused)."""
    if not isinstance(value, bool):
        raise _refuse(owner, name, value, "True or False")
    return value


def check_choice(owner: str, name: str, value: Any, choices: Sequence[str]) -> str:
    """A string option among ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise _refuse(owner, name, value, ", ".join(choices))
    return value
