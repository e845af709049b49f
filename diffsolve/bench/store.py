"""The resumable sweep store: one CSV row per finished cell, appended, flushed and fsync'ed.

A rerun reads the CSV, drops a torn last line (a kill mid-write), removes orphan ``.tmp-*`` files
of a killed atomic write, and computes only the cells whose key is missing. When the sweep
completes, the file is rewritten atomically in the canonical cell order
(:func:`canonicalize`), so that an interrupted-and-resumed sweep, an uninterrupted one and a Ray
run write identical files. No timing is recorded (it would differ run to run).

    >>> import os, tempfile
    >>> from diffsolve.bench.store import append_row, open_store, read_rows
    >>> path = os.path.join(tempfile.mkdtemp(), "s.csv")
    >>> open_store(path)
    set()
    >>> append_row(path, {"model": "gmm-2d", "seed": 0, "method": "exact:floor", "budget": 0.0, "status": "ok"})
    >>> with open(path, "a") as f:
    ...     _ = f.write("gmm-2d,ddpm-lin")          # a kill in the middle of a line
    >>> [(r["model"], r["budget"]) for r in read_rows(path)]
    [('gmm-2d', '0')]
    >>> open_store(path)
    {('gmm-2d', '', '', '', '0', 'exact:floor', '0')}
"""

from __future__ import annotations

import csv
import io
import math
import os
from typing import Any, Iterable, Sequence

from ..io import atomic_write_text, remove_orphans

__all__ = ["COLUMNS", "KEY", "ORPHAN_AGE_S", "Table", "fmt", "read_rows", "row_key", "open_store", "append_row",
           "canonicalize"]

COLUMNS = ["model", "path", "prediction", "batch", "seed", "method", "lib", "solver", "schedule", "options", "kind",
           "budget", "nfe", "rms", "sliced_w2", "mmd", "mode_tv", "frechet", "class_acc", "status", "message"]
#: the columns that identify a cell: a row with the same key is the same cell
KEY = ("model", "path", "prediction", "batch", "seed", "method", "budget")
#: a temporary file of an atomic write older than this (seconds) is an orphan of a killed process;
#: younger ones may belong to another sweep writing into the same directory right now
ORPHAN_AGE_S = 60.0


def fmt(v: Any) -> str:
    """A value as the CSV writes it: integral floats without ``.0``, None as empty.

    >>> fmt(8.0), fmt(0.01), fmt(None), fmt(True)
    ('8', '0.01', '', 'True')
    """
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if math.isfinite(v) and v == int(v) and abs(v) < 1e15:
            return str(int(v))
        return repr(v)
    return str(v)


def _whole_lines(text: str) -> str:
    return text[: text.rfind("\n") + 1] if text and not text.endswith("\n") else text


def _read(path: str) -> str:
    """The file's text without a torn last line (a kill mid-write); "" for a missing file."""
    if not os.path.exists(path):
        return ""
    with open(path, newline="") as f:
        return _whole_lines(f.read())


class Table:
    """A resumable CSV with fixed ``columns`` whose rows are identified by the ``key`` columns:
    one row per finished cell, appended, flushed and fsync'ed; :meth:`done` prepares a rerun;
    :meth:`canonicalize` rewrites the file atomically in a given key order.  The sweep store below
    is the table of :data:`COLUMNS`; the inverse-problem benchmarks use their own columns.

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

    def _rows_of(self, text: str) -> list[dict[str, str]]:
        if text.strip() and not text.startswith(self.header):
            raise ValueError(f"{self.path} is not a table of this benchmark (its header differs from "
                             f"{self.header.strip()!r}); move it away or pick another output")
        return list(csv.DictReader(io.StringIO(text))) if text.strip() else []

    def rows(self) -> list[dict[str, str]]:
        """The rows written so far (a torn last line ignored)."""
        return self._rows_of(_read(self.path))

    def row_key(self, row: dict[str, Any]) -> tuple[str, ...]:
        return tuple(fmt(row.get(k)) for k in self.key)

    def done(self) -> set[tuple[str, ...]]:
        """Prepare the file for appending (directory made, orphans of a killed atomic write
        removed, a torn last line dropped) and return the keys already present."""
        d = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(d, exist_ok=True)
        remove_orphans(d, older_than=ORPHAN_AGE_S)
        if not os.path.exists(self.path):
            return set()
        with open(self.path, newline="") as f:
            raw = f.read()
        text = _whole_lines(raw)
        rows = self._rows_of(text)
        if text != raw or not text.strip():
            atomic_write_text(self.path, text if text.strip() else "")
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
        """Rewrite atomically: rows of ``order``'s keys first in that order, then any others in
        their order (duplicates dropped, the last written wins)."""
        rows = self.rows()
        by_key = {self.row_key(r): r for r in rows}
        out, seen = [self.header], set()
        for k in list(order) + [self.row_key(r) for r in rows]:
            if k in by_key and k not in seen:
                out.append(self._line(by_key[k]))
                seen.add(k)
        atomic_write_text(self.path, "".join(out))


def _sweep(csv_path: str) -> Table:
    return Table(csv_path, COLUMNS, KEY)


def row_key(row: dict[str, str]) -> tuple[str, ...]:
    """The key of a row read back from the CSV (all strings)."""
    return tuple(row[k] for k in KEY)


def read_rows(csv_path: str) -> list[dict[str, str]]:
    """Rows of a sweep CSV (a torn last line, left by a kill mid-write, is ignored); a CSV whose
    header lacks sweep columns is refused (``--from-csv`` reads files given by the user)."""
    text = _read(csv_path)
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or COLUMNS)]
    if missing:
        raise ValueError(f"{csv_path} is not a sweep CSV: its header lacks {', '.join(missing)}")
    return list(reader)


def open_store(csv_path: str) -> set[tuple[str, ...]]:
    """Prepare ``csv_path`` for appending (its directory made, orphan temporary files of a killed
    atomic write removed, a torn last line dropped); returns the keys of the cells already done."""
    return _sweep(csv_path).done()


def append_row(csv_path: str, row: dict[str, Any]) -> None:
    """Append one finished cell (the header first if the file is new); durable on return."""
    _sweep(csv_path).append(row)


def canonicalize(csv_path: str, order: Iterable[tuple[str, ...]]) -> None:
    """Rewrite the CSV atomically with the rows of ``order``'s keys first, in that order, then the
    rows of other sweeps sharing the file in their order (duplicates dropped)."""
    _sweep(csv_path).canonicalize(order)
