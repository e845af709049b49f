"""The inverse-problem benchmarks' run loop over a resumable :class:`~diffsolve.bench.store.Table`
(the same store as the solver sweep, with the benchmark's own columns): compute each missing
cell, append it as it finishes, then rewrite the table in the canonical cell order (so an
interrupted-and-resumed run and an uninterrupted one write the same file).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from .store import Table

__all__ = ["Table", "run_into"]


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
