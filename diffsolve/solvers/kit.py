"""The shared kit of every solver file: each piece of arithmetic or rule written once.

* levels and step sizes (Python floats, never tensors): ``lambda = -log s``,
  :func:`step_size` ``h = lambda_{i+1} - lambda_i = log(s_i / s_{i+1})``, :func:`level_at`
  the level ``s e^{-r h}`` at ``lambda + r h``;
* :func:`eps_of`: the noise prediction ``eps = (y - D) / s`` that a denoised output implies;
* :func:`bc`: broadcast a scalar or a per-row level against a batch (:mod:`diffsolve.tensors`,
  re-exported: one broadcast rule for denoisers and solvers);
* the multistep order rule (:func:`multistep_order`, :func:`check_lower_order_final`);
* option validators (:func:`check_int`, :func:`check_number`, :func:`check_bool`,
  :func:`check_choice`, from :mod:`diffsolve.checks`, re-exported) that every solver's
  ``__init__`` uses, so that ``order=True``, ``eta="a"`` or ``r1=nan`` are refused with an error
  naming the solver, the option, the value and what is accepted.

This module imports nothing from the solver package: every solver file may import it.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from ..checks import check_bool, check_choice, check_int, check_number
from ..tensors import bc

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


def eps_of(y: Tensor, d: Tensor, s: Tensor | float) -> Tensor:
    """The noise prediction eps = (y - D) / s that the denoised output D implies at level s
    (y = x0 + s eps in canonical space)."""
    return (y - d) / bc(s, y)


# -- the multistep order rule ---------------------------------------------------------------
#: diffusers' threshold: ``lower_order_final`` applies to runs of fewer steps than this
LOWER_ORDER_FINAL_BELOW = 15


def check_lower_order_final(value: Any, owner: str = "solver") -> bool | str:
    """Validate a ``lower_order_final`` option: True, False or ``"last"``."""
    if not (value is True or value is False or (isinstance(value, str) and value == "last")):
        raise ValueError(f"{owner}: lower_order_final={value!r} is not accepted; accepted: True, False or 'last'")
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
