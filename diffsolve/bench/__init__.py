"""Benchmarks: our solvers and the peers' (diffusers, k-diffusion, torchdiffeq) on the same network,
from the same noise, with the NFE counted at the network.

A sweep, in the order its spec travels through the modules:

* :mod:`~diffsolve.bench.spec`: :class:`SweepSpec` (what to run) and its defaults, checked when built;
* :mod:`~diffsolve.bench.methods`: method keys (``diffsolve:SOLVER[SCHEDULE]{opts}``, peers,
  reference and floor rows), the default methods, which budgets a method can honour;
* :mod:`~diffsolve.bench.cells`: the spec expanded into cells (model, method, budget, seed);
* :mod:`~diffsolve.bench.networks`: the network of a model name, its conditioning bound;
* :mod:`~diffsolve.bench.measure`: one (model, seed)'s noise and reference, one cell measured;
* :mod:`~diffsolve.bench.store`: the resumable CSV (append, repair, canonical order);
* :mod:`~diffsolve.bench.run`: :func:`run_sweep`, serial or over Ray workers.

Beside it: :mod:`~diffsolve.bench.peers` (the peers' adapters), :mod:`~diffsolve.bench.report`
(Markdown tables and the log-log plot), :mod:`~diffsolve.bench.overhead` (loop overhead per step
against diffusers). ``diffsolve bench`` on the command line is :mod:`diffsolve.cli.bench`.

Example::

    >>> import diffsolve.bench as B
    >>> rows = B.bench("/tmp/diffsolve-doctest-bench", models=("gmm-2d",), nfes=(4,), seeds=(0,), batch=4,
    ...                methods=("diffsolve:dpm++2m[log-snr]",), ref_steps=10)   # doctest: +SKIP
    >>> sorted({r["method"] for r in rows})                                      # doctest: +SKIP
    ['diffsolve:dpm++2m[log-snr]', 'exact:floor', 'reference:rk4-vs-dopri5']
"""

from __future__ import annotations

from typing import Any, Sequence

from .cells import Cell, make_cells
from .methods import FLOOR, REFERENCE, default_methods, parse_method
from .report import write_report
from .run import Interrupted, run_sweep
from .spec import DEFAULT_MODELS, SweepSpec
from .store import read_rows

__all__ = ["bench", "SweepSpec", "Cell", "default_methods", "parse_method", "make_cells", "read_rows", "run_sweep",
           "write_report", "Interrupted", "REFERENCE", "FLOOR"]


def bench(prefix: str, *, models: Sequence[str] = DEFAULT_MODELS,
          methods: Sequence[str] | None = None, ray: str | None = None, report: bool = True,
          **spec: Any) -> list[dict[str, str]]:
    """Run (or resume) a sweep into ``PREFIX.csv`` and write ``PREFIX.md`` / ``PREFIX.png``.

    ``methods`` defaults to :func:`default_methods` (every registered solver on the default
    schedules, and every peer); other keyword arguments are fields of :class:`SweepSpec`
    (``nfes``, ``seeds``, ``batch``, ``rtols``, ``path``, ``prediction``, ``ref_steps`` ...).
    """
    s = SweepSpec(models=tuple(models), methods=tuple(methods or default_methods()), **spec)
    rows = run_sweep(s, prefix + ".csv", ray=ray)
    if report:
        write_report([prefix + ".csv"], prefix)
    return rows
