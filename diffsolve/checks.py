"""Value checks shared by every layer (solvers, schedules, denoisers, the driver): each refuses
a bad value with a message that names its owner, the argument, the value and what is accepted.
This module imports nothing from diffsolve, so that any module may use it.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Sequence

__all__ = ["check_int", "check_number", "check_bool", "check_choice"]


def _refuse(owner: str, name: str, value: Any, accepted: str) -> ValueError:
    return ValueError(f"{owner}: {name}={value!r} is not accepted; accepted: {accepted}")


def check_int(owner: str, name: str, value: Any, choices: Sequence[int] | None = None,
              minimum: int = 1, maximum: int | None = None) -> int:
    """An integer option (numpy integers accepted, bools refused), one of ``choices`` if given,
    else at least ``minimum``.

    >>> check_int("unipc", "order", True, (1, 2, 3))
    Traceback (most recent call last):
    ...
    ValueError: unipc: order=True is not accepted; accepted: 1, 2, 3
    """
    accepted = (", ".join(map(str, choices)) if choices is not None else f"an integer >= {minimum}"
                + (f" and <= {maximum}" if maximum is not None else ""))
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _refuse(owner, name, value, accepted)
    v = int(value)
    if (choices is not None and v not in choices) or (choices is None and v < minimum) \
            or (maximum is not None and v > maximum):
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
