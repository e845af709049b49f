"""Reading the benchmarks' CSV rows in reports: a cell as a number (NaN when empty or not a
number), the rows that ran, the distinct values in first-seen order.

    >>> number(""), number("2.5"), unique(["b", "a", "b"])
    (nan, 2.5, ['b', 'a'])
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

__all__ = ["Row", "number", "ok_rows", "unique"]

Row = dict[str, str]


def number(v: Any) -> float:
    """``float(v)``, NaN for an empty or non-numeric cell."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def ok_rows(rows: Sequence[Row]) -> list[Row]:
    """The rows whose ``status`` is ``ok``."""
    return [r for r in rows if r.get("status") == "ok"]


def unique(seq: Iterable[str]) -> list[str]:
    """The distinct values of ``seq`` in first-seen order."""
    return list(dict.fromkeys(seq))
