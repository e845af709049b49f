"""Cells: a sweep's spec expanded into (model, method, budget, seed), in canonical order.

``budget`` is the NFE for fixed-budget methods and the relative tolerance for adaptive ones
(their NFE is counted and reported); reference and floor rows have budget 0.

    >>> from diffsolve.bench.cells import cell_key, make_cells
    >>> from diffsolve.bench.spec import SweepSpec
    >>> spec = SweepSpec(models=("gmm-2d",), methods=("diffsolve:dpm++2m[log-snr]",), nfes=(4, 8),
    ...                  seeds=(0,), batch=8)
    >>> [c.method for c in make_cells(spec)]
    ['reference:rk4-vs-dopri5', 'exact:floor', 'diffsolve:dpm++2m[log-snr]', 'diffsolve:dpm++2m[log-snr]']
    >>> [cell_key(spec, c) for c in make_cells(spec)][-1]
    ('gmm-2d', 'ddpm-linear', 'eps', '8', '0', 'diffsolve:dpm++2m[log-snr]', '8')
"""

from __future__ import annotations

from dataclasses import dataclass

from .methods import FLOOR, REFERENCE, feasible, parse_method
from .networks import model_path_prediction
from .spec import SweepSpec
from .store import fmt

__all__ = ["Cell", "make_cells", "cell_key"]


@dataclass(frozen=True)
class Cell:
    """One row of a sweep: ``budget`` is the NFE (int) for fixed budgets, the rtol for adaptive
    methods, 0 for reference rows."""

    model: str
    method: str
    budget: float
    seed: int

    @property
    def budget_str(self) -> str:
        return fmt(self.budget)


def make_cells(spec: SweepSpec) -> list[Cell]:
    """The sweep's cells in canonical order: per model, per seed, the reference and floor rows,
    then every method at every feasible NFE (adaptive methods at every tolerance)."""
    cells = []
    kinds = {m: parse_method(m)["kind"] for m in spec.methods}
    for model in spec.models:
        for seed in spec.seeds:
            cells.append(Cell(model, REFERENCE, 0, seed))
            cells.append(Cell(model, FLOOR, 0, seed))
            for m in spec.methods:
                if kinds[m] in ("reference", "floor"):
                    continue
                if kinds[m] == "adaptive":
                    cells.extend(Cell(model, m, float(r), seed) for r in spec.rtols)
                else:
                    cells.extend(Cell(model, m, int(n), seed) for n in spec.nfes if feasible(m, int(n)))
    return cells


def cell_key(spec: SweepSpec, c: Cell) -> tuple[str, ...]:
    """The store's key (:data:`~diffsolve.bench.store.KEY`) of a cell."""
    path, prediction = model_path_prediction(c.model, spec.path, spec.prediction)
    return (c.model, path, prediction, str(spec.batch), str(c.seed), c.method, c.budget_str)
