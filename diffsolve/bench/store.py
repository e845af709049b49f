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
from typing import Any, Iterable

from ..io import atomic_write_text, remove_orphans

__all__ = ["COLUMNS", "KEY", "ORPHAN_AGE_S", "fmt", "read_rows", "row_key", "open_store", "append_row", "canonicalize"]

COLUMNS = ["model", "path", "prediction", "batch", "seed", "method", "lib", "solver", "schedule", "options", "kind",
           "budget", "nfe", "rms", "sliced_w2", "mmd", "mode_tv", "frechet", "class_acc", "status", "message"]
#: the columns that identify a cell: a row with the same key is the same cell
KEY = ("model", "path", "prediction", "batch", "seed", "method", "budget")
_HEADER = ",".join(COLUMNS) + "\n"
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


def _line(row: dict[str, Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([fmt(row.get(c)) for c in COLUMNS])
    return buf.getvalue()


def row_key(row: dict[str, str]) -> tuple[str, ...]:
    """The key of a row read back from the CSV (all strings)."""
    return tuple(row[k] for k in KEY)


def _whole_lines(text: str) -> str:
    return text[: text.rfind("\n") + 1] if text and not text.endswith("\n") else text


def read_rows(csv_path: str) -> list[dict[str, str]]:
    """Rows of a sweep CSV (a torn last line, left by a kill mid-write, is ignored)."""
    if not os.path.exists(csv_path):
        return []
    with open(csv_path, newline="") as f:
        text = f.read()
    reader = csv.DictReader(io.StringIO(_whole_lines(text)))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or COLUMNS)]
    if missing:
        raise ValueError(f"{csv_path} is not a sweep CSV: its header lacks {', '.join(missing)}")
    return list(reader)


def _repair(csv_path: str) -> None:
    """Drop a torn last line and make sure the header is the current one."""
    if not os.path.exists(csv_path):
        return
    with open(csv_path, newline="") as f:
        text = f.read()
    fixed = _whole_lines(text)
    if not fixed.startswith(_HEADER):
        if fixed.strip():
            raise ValueError(f"{csv_path} is not a sweep CSV of this version (header differs); "
                             "move it away or pick another output")
        fixed = _HEADER
    if fixed != text:
        atomic_write_text(csv_path, fixed)


def open_store(csv_path: str) -> set[tuple[str, ...]]:
    """Prepare ``csv_path`` for appending (its directory made, orphan temporary files of a killed
    atomic write removed, a torn last line dropped); returns the keys of the cells already done."""
    d = os.path.dirname(os.path.abspath(csv_path))
    os.makedirs(d, exist_ok=True)
    remove_orphans(d, older_than=ORPHAN_AGE_S)
    _repair(csv_path)
    return {row_key(r) for r in read_rows(csv_path)}


def append_row(csv_path: str, row: dict[str, Any]) -> None:
    """Append one finished cell (the header first if the file is new); durable on return."""
    new = not os.path.exists(csv_path)
    with open(csv_path, "a", newline="") as f:
        if new:
            f.write(_HEADER)
        f.write(_line(row))
        f.flush()
        os.fsync(f.fileno())


def canonicalize(csv_path: str, order: Iterable[tuple[str, ...]]) -> None:
    """Rewrite the CSV atomically with the rows of ``order``'s keys first, in that order, then the
    rows of other sweeps sharing the file in their order (duplicates dropped)."""
    rows = read_rows(csv_path)
    by_key = {row_key(r): r for r in rows}
    seen: set[tuple[str, ...]] = set()
    out = [_HEADER]
    for k in order:
        if k in by_key and k not in seen:
            out.append(_line(by_key[k]))
            seen.add(k)
    for r in rows:
        k = row_key(r)
        if k not in seen:
            out.append(_line(r))
            seen.add(k)
    atomic_write_text(csv_path, "".join(out))
