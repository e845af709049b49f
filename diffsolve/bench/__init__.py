"""Benchmarks: our solvers and the peers' (diffusers, k-diffusion, torchdiffeq) on the same network,
from the same noise, with the NFE counted at the network.

* :mod:`~diffsolve.bench.sweep`: resumable sweeps (cells -> CSV), optional Ray fan-out;
* :mod:`~diffsolve.bench.peers`: the peers' adapters;
* :mod:`~diffsolve.bench.report`: Markdown tables and the log-log plot;
* :mod:`~diffsolve.bench.overhead`: loop overhead per step against diffusers;
* ``diffsolve bench`` on the command line (:mod:`~diffsolve.bench.cli`).

Example::

    >>> import diffsolve.bench as B
    >>> rows = B.bench("/tmp/diffsolve-doctest-bench", models=("gmm-2d",), nfes=(4,), seeds=(0,), batch=4,
    ...                methods=("diffsolve:dpm++2m[log-snr]",), ref_steps=10)   # doctest: +SKIP
    >>> sorted({r["method"] for r in rows})                                      # doctest: +SKIP
    ['diffsolve:dpm++2m[log-snr]', 'exact:floor', 'reference:rk4-vs-dopri5']
"""

from __future__ import annotations

from typing import Any, Sequence

from .sweep import SweepSpec, default_methods, make_cells, read_rows, run_sweep

__all__ = ["bench", "SweepSpec", "default_methods", "make_cells", "read_rows", "run_sweep"]


def bench(prefix: str, *, models: Sequence[str] = ("gmm-2d", "gmm-64", "gmm-3072"),
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
        from .report import write_report

        write_report([prefix + ".csv"], prefix)
    return rows
