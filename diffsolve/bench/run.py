"""Running a sweep: the cells missing from the store, computed serially or by Ray workers, each
appended as it finishes, then the file rewritten in canonical order.

    >>> import os, tempfile
    >>> from diffsolve.bench.run import run_sweep
    >>> from diffsolve.bench.spec import SweepSpec
    >>> spec = SweepSpec(models=("gmm-2d",), methods=("diffsolve:dpm++2m[log-snr]",), nfes=(4,),
    ...                  seeds=(0,), batch=4, ref_steps=10)
    >>> rows = run_sweep(spec, os.path.join(tempfile.mkdtemp(), "tiny.csv"))   # doctest: +SKIP
    >>> [r["method"] for r in rows]                                             # doctest: +SKIP
    ['reference:rk4-vs-dopri5', 'exact:floor', 'diffsolve:dpm++2m[log-snr]']
"""

from __future__ import annotations

from typing import Any, Callable

from .cells import Cell, cell_key, make_cells
from .measure import Context, compute_context, run_cell
from .ray_address import check_ray_address
from .spec import SweepSpec
from .store import append_row, canonicalize, open_store, read_rows

__all__ = ["run_sweep", "Interrupted"]

Emit = Callable[[dict[str, Any]], None]


class Interrupted(Exception):
    """Raised by an ``on_row`` callback to stop a sweep (tests use it to simulate a kill)."""


def run_sweep(spec: SweepSpec, csv_path: str, *, ray: str | None = None, ray_cpus: int | None = None,
              on_row: Callable[[dict[str, Any], int, int], None] | None = None,
              log: Callable[[str], None] | None = None, chunk: int = 16) -> list[dict[str, str]]:
    """Run (or resume) a sweep into ``csv_path``; returns the final rows.

    ``ray``: None (serial), ``"local"`` (start a Ray cluster on this machine with ``ray_cpus``
    CPUs) or the address of a running cluster (refused at once, before any work, when nothing
    answers there: :func:`~diffsolve.bench.ray_address.check_ray_address`).  ``on_row(row, done, total)`` is called after every
    appended row; raising :class:`Interrupted` from it stops the sweep (rows written so far stay).
    """
    if ray is not None:
        check_ray_address(ray)
    cells = make_cells(spec)
    done = open_store(csv_path)
    todo = [c for c in cells if cell_key(spec, c) not in done]
    total, n_done = len(cells), len(cells) - len(todo)
    if log:
        log(f"{total} cells, {n_done} already in {csv_path}, {len(todo)} to compute")
    groups: dict[tuple[str, int], list[Cell]] = {}
    for c in todo:
        groups.setdefault((c.model, c.seed), []).append(c)

    def emit(row: dict[str, Any]) -> None:
        nonlocal n_done
        append_row(csv_path, row)
        n_done += 1
        if on_row is not None:
            on_row(row, n_done, total)

    if ray is None:
        for (model, seed), gcells in groups.items():
            ctx = compute_context(spec, model, seed)
            for c in gcells:
                emit(run_cell(spec, c, ctx))
    else:
        _run_ray(spec, groups, emit, ray, ray_cpus, chunk)
    canonicalize(csv_path, [cell_key(spec, c) for c in cells])
    return read_rows(csv_path)


def _run_group(spec: SweepSpec, cells: list[Cell], ctx: Context) -> list[dict[str, Any]]:
    return [run_cell(spec, c, ctx) for c in cells]


def _run_ray(spec: SweepSpec, groups: dict[tuple[str, int], list[Cell]], emit: Emit, address: str,
             cpus: int | None, chunk: int) -> None:
    try:
        import ray as _ray  # optional dependency (diffsolve[ray])
    except ImportError:
        raise ImportError("--ray needs Ray: pip install 'diffsolve[ray]' (or pip install ray)") from None
    started = False
    if not _ray.is_initialized():
        if address == "local":
            _ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        else:
            _ray.init(address=address, log_to_driver=False)
        started = True
    try:
        ctx_task = _ray.remote(compute_context)
        group_task = _ray.remote(_run_group)
        spec_ref = _ray.put(spec)
        pending = []
        for (model, seed), gcells in groups.items():
            ctx_ref = ctx_task.remote(spec_ref, model, seed)
            for i in range(0, len(gcells), chunk):
                pending.append(group_task.remote(spec_ref, gcells[i:i + chunk], ctx_ref))
        while pending:
            ready, pending = _ray.wait(pending, num_returns=1)
            for row in _ray.get(ready[0]):
                emit(row)
    finally:
        if started:
            _ray.shutdown()
