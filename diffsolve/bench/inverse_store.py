"""A resumable CSV table for the inverse-problem benchmarks: one row per finished cell, appended,
flushed and fsync'ed; a rerun computes only the cells whose key is missing; at the end the file
is rewritten atomically in the canonical cell order (so an interrupted-and-resumed run and an
uninterrupted one write the same file). The sweep store (:mod:`~diffsolve.bench.store`) has
fixed columns; this one takes them as arguments and shares its value format (``fmt``).

    >>> import os, tempfile
    >>> t = Table(os.path.join(tempfile.mkdtemp(), "t.csv"), ["problem", "nfe", "w2"], key=("problem", "nfe"))
    >>> t.done()
    set()
    >>> t.append({"problem": "a", "nfe": 10, "w2": 0.5}); t.append({"problem": "a", "nfe": 5, "w2": 1.0})
    >>> with open(t.path, "a") as f:
    ...     _ = f.write("b,1")                    # a kill in the middle of a line
    >>> sorted(t.done())
    [('a', '10'), ('a', '5')]
    >>> t.canonicalize([("a", "5"), ("a", "10")]); [r["nfe"] for r in t.rows()]
    ['5', '10']
"""

from __future__ import annotations

import csv
import io
import os
from typing import Any, Callable, Iterable, Sequence

from ..io import atomic_write_text, remove_orphans
from .store import ORPHAN_AGE_S, fmt

__all__ = ["Table", "run_into"]


class Table:
    """A CSV file with fixed ``columns`` whose rows are identified by the ``key`` columns."""

    def __init__(self, path: str, columns: Sequence[str], key: Sequence[str]):
        missing = [k for k in key if k not in columns]
        if missing:
            raise ValueError(f"key columns {missing} are not among the columns {list(columns)}")
        self.path, self.columns, self.key = path, list(columns), tuple(key)
        self.header = ",".join(self.columns) + "\n"

    def _line(self, row: dict[str, Any]) -> str:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow([fmt(row.get(c)) for c in self.columns])
        return buf.getvalue()

    def _text(self) -> str:
        if not os.path.exists(self.path):
            return ""
        with open(self.path, newline="") as f:
            text = f.read()
        return text[: text.rfind("\n") + 1] if text and not text.endswith("\n") else text  # torn last line

    def rows(self) -> list[dict[str, str]]:
        """The rows written so far (a torn last line ignored)."""
        text = self._text()
        if text and not text.startswith(self.header):
            raise ValueError(f"{self.path} is not a table of this benchmark (its header differs from "
                             f"{self.header.strip()!r}); move it away or pick another --out")
        return list(csv.DictReader(io.StringIO(text))) if text else []

    def row_key(self, row: dict[str, Any]) -> tuple[str, ...]:
        return tuple(fmt(row.get(k)) for k in self.key)

    def done(self) -> set[tuple[str, ...]]:
        """Prepare the file for appending (directory made, orphans of a killed atomic write
        removed, a torn last line dropped) and return the keys already present."""
        d = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(d, exist_ok=True)
        remove_orphans(d, older_than=ORPHAN_AGE_S)
        rows = self.rows()
        text = self._text()
        if os.path.exists(self.path) and text != open(self.path, newline="").read():
            atomic_write_text(self.path, text)
        return {self.row_key(r) for r in rows}

    def append(self, row: dict[str, Any]) -> None:
        """Append one finished row (the header first if the file is new); durable on return."""
        new = not os.path.exists(self.path) or os.path.getsize(self.path) == 0
        with open(self.path, "a", newline="") as f:
            if new:
                f.write(self.header)
            f.write(self._line(row))
            f.flush()
            os.fsync(f.fileno())

    def canonicalize(self, order: Iterable[tuple[str, ...]]) -> None:
        """Rewrite atomically: rows of ``order``'s keys first in that order, then any others
        (duplicates dropped, the last written wins)."""
        rows = self.rows()
        by_key = {self.row_key(r): r for r in rows}
        out, seen = [self.header], set()
        for k in list(order) + [self.row_key(r) for r in rows]:
            if k in by_key and k not in seen:
                out.append(self._line(by_key[k]))
                seen.add(k)
        atomic_write_text(self.path, "".join(out))


def run_into(table: Table, keys: Sequence[tuple[str, ...]], todo: Sequence[Any], compute: Callable[[Any], dict],
             *, desc: str, progress: bool = True,
             on_row: Callable[[dict[str, Any], int, int], None] | None = None) -> list[dict[str, str]]:
    """Compute each cell of ``todo`` (``compute(cell) -> row``), append it as it finishes (a
    progress bar over all ``keys``; ``on_row(row, done, total)`` after each: raising from it stops
    the run, rows written so far stay), then rewrite the table in the order of ``keys``."""
    total, n = len(keys), len(keys) - len(todo)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, initial=n, desc=desc, unit="cell")
    try:
        for c in todo:
            if bar is not None:
                bar.set_postfix_str(" ".join(map(str, c)))
            row = compute(c)
            table.append(row)
            n += 1
            if bar is not None:
                bar.update(1)
            if on_row is not None:
                on_row(row, n, total)
    finally:
        if bar is not None:
            bar.close()
    table.canonicalize(keys)
    return table.rows()
