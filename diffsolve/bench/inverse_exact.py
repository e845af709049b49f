"""The exact inverse-problem benchmark: every registered posterior sampler x NFE budget on mixture
problems whose posterior is known in closed form (:mod:`~.inverse_problems`), with the oracle
rows and the statistical floor.

Rows (``method`` column):

* ``exact:floor`` -- a second exact posterior set against the reference set: the floor of every
  distance at this sample size (budget 0);
* ``oracle:SOLVER`` -- our ODE solvers (``dpm++2m``, ``unipc-bh2``) on the *exact posterior
  denoiser* at the same NFE, started from ``posterior.mean() + s_max noise`` (dropping the mean
  would cost more than the discretisation): what is left is discretisation error alone;
* ``METHOD`` -- every method of :func:`diffsolve.inverse.methods` (new methods join by the
  registry) at its defaults, except budget-fitting options where the default cannot spend the
  budget (:data:`BUDGET_OPTIONS`: TDS's particle count); a budget a method refuses is a
  ``skipped`` row with its reason; a cell over the cost cap is an ``over-cap`` row, computed by
  a later run into the same CSV whose ``max_cost`` admits it.

Metrics, against ``4 n`` reference samples of the exact posterior (seeded; ``n`` samples per
cell): ``sliced_w2`` and ``w2_ratio`` = sliced W2 / the floor (the mean sliced W2 of 8 exact sets
of n samples to the reference; the floor row shows the first of them); ``weight_tv`` -- total variation between the
fraction of samples in each posterior component (``posterior.assign``) and the exact posterior
weights (``weight_tv_floor``: its expectation for n exact samples); ``mean_err`` = ||mean - m|| /
sqrt(tr C) and ``var_err`` = ||var - v|| / ||v|| (per-coordinate variances) with m, C, v the exact
posterior mean, covariance and its diagonal.

    >>> rows = run_exact("/tmp/diffsolve-doctest-inv/x.csv", problems=("gmm-2d",), methods=("ddrm",),
    ...                  nfes=(10,), num=200, progress=False)                      # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from ..checks import check_choice
from ..inverse import METHODS, solve_inverse
from ..metrics import mode_tv_floor, sliced_w2
from ..noise import NoiseSource
from ..sample import sample
from ..schedules import DEFAULT_S_RANGE
from .inverse_problems import DEFAULT_EXACT_PROBLEMS, ExactProblem, check_exact_problem, exact_problem
from .inverse_store import Table, run_into

__all__ = ["ExactSpec", "run_exact", "exact_cells", "COLUMNS", "KEY", "FLOOR", "OVER_CAP", "ORACLES", "BUDGET_OPTIONS",
           "DEFAULT_NFES", "tds_particles"]

F64 = torch.float64
FLOOR = "exact:floor"
#: the status of a cell over the cost cap (recomputed by a run whose cap admits it)
OVER_CAP = "over-cap"
ORACLES = ("oracle:dpm++2m", "oracle:unipc-bh2")
DEFAULT_NFES = (10, 20, 50, 100, 1000)
COLUMNS = ["problem", "dim", "n_meas", "sigma_y", "num", "method", "budget", "nfe", "vjp", "options", "sliced_w2",
           "w2_ratio", "weight_tv", "weight_tv_floor", "mean_err", "var_err", "seconds", "status", "message"]
KEY = ("problem", "num", "method", "budget")


def tds_particles(nfe: int, min_steps: int = 25) -> int:
    """TDS's particle count at a budget: the most particles K whose steps (nfe / 2K, a whole
    number) reach ``min(min_steps, nfe // 2)``; 0 when none fits (an odd budget).

    >>> [tds_particles(n) for n in (10, 20, 50, 100, 1000, 7)]
    [1, 1, 1, 2, 20, 0]
    """
    want = min(min_steps, nfe // 2)
    fits = [k for k in range(1, nfe // 2 + 1) if nfe % (2 * k) == 0 and nfe // (2 * k) >= max(want, 2)]
    return max(fits) if fits else 0


#: options the benchmark gives a method at a budget its defaults cannot spend (else its defaults)
BUDGET_OPTIONS: dict[str, Callable[[int], dict[str, Any]]] = {"tds": lambda nfe: {"particles": tds_particles(nfe)}}


@dataclass(frozen=True)
class ExactSpec:
    """What to run: problems, methods (registry names; default all), budgets, samples per cell,
    the oracle solvers, and the cost cap (``max_cost``: NFE x samples x dimension x components
    of the prior; a cell above it is recorded as skipped)."""

    problems: Sequence[str] = DEFAULT_EXACT_PROBLEMS
    methods: Sequence[str] | None = None
    nfes: Sequence[int] = DEFAULT_NFES
    num: int = 500
    oracles: Sequence[str] = ORACLES
    max_cost: float = 2e8
    seed: int = 0
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for p in self.problems:
            check_exact_problem(p)
        for m in self.all_methods:
            check_choice("ExactSpec", "methods", m, sorted(METHODS))
        for o in self.oracles:
            if not o.startswith("oracle:"):
                raise ValueError(f"oracle rows are named oracle:SOLVER, got {o!r}")
        bad = [n for n in self.nfes if isinstance(n, bool) or not isinstance(n, int) or n < 1]
        if bad:
            raise ValueError(f"nfes must be positive integers, got {bad[0]!r}")
        if isinstance(self.num, bool) or not isinstance(self.num, int) or self.num < 2:
            raise ValueError(f"num must be an integer >= 2 (samples per cell), got {self.num!r}")

    @property
    def all_methods(self) -> tuple[str, ...]:
        return tuple(sorted(METHODS)) if self.methods is None else tuple(self.methods)


def exact_cells(spec: ExactSpec) -> list[tuple[str, str, int]]:
    """(problem, method, budget) in canonical order: per problem the floor, the oracles, then
    every method at every budget."""
    cells = []
    for p in spec.problems:
        cells.append((p, FLOOR, 0))
        for m in (*spec.oracles, *spec.all_methods):
            cells.extend((p, m, int(n)) for n in spec.nfes)
    return cells


#: the reference set is this many times the cell's samples (less noise in every distance)
REF_FACTOR = 4
#: exact sets of the cell's size averaged into the floor
FLOOR_SETS = 8


class _Reference:
    """The exact side of one problem: a reference posterior set of ``REF_FACTOR * num`` samples,
    the moments, and the floor: the mean sliced W2 of ``FLOOR_SETS`` independent exact sets of
    ``num`` samples to the reference (one pair alone scatters by tens of percent at 500 samples)."""

    def __init__(self, prob: ExactProblem, num: int, seed: int):
        post = prob.posterior
        self.post = post
        self.a = post.sample(REF_FACTOR * num, generator=torch.Generator().manual_seed(seed + 1)).reshape(-1, post.dim)
        sets = [post.sample(num, generator=torch.Generator().manual_seed(seed + 2 + i)).reshape(num, -1)
                for i in range(FLOOR_SETS)]
        self.b = sets[0]
        self.mean = post.mean()
        self.var = post.covariance().diagonal()
        self.trace = float(self.var.sum())
        self.floor = sum(sliced_w2(b, self.a) for b in sets) / FLOOR_SETS
        self.tv_floor = mode_tv_floor(post.weights, num)

    def measure(self, x: torch.Tensor) -> dict[str, float]:
        x = x.reshape(x.shape[0], -1).to(F64)
        freq = torch.bincount(self.post.assign(x.reshape(x.shape[0], *self.post.shape)),
                              minlength=self.post.K).to(F64) / x.shape[0]
        w2 = sliced_w2(x, self.a)
        return {"sliced_w2": w2, "w2_ratio": w2 / self.floor,
                "weight_tv": float(0.5 * (freq - self.post.weights).abs().sum()), "weight_tv_floor": self.tv_floor,
                "mean_err": float((x.mean(0) - self.mean).norm()) / math.sqrt(self.trace),
                "var_err": float((x.var(0) - self.var).norm() / self.var.norm())}


def _run_method(prob: ExactProblem, method: str, nfe: int, spec: ExactSpec) -> tuple[torch.Tensor, int, int, dict]:
    if method.startswith("oracle:"):
        solver = method.split(":", 1)[1]
        seeds = list(range(spec.seed, spec.seed + spec.num))
        noise = NoiseSource.initial(seeds, prob.prior.shape).to(F64)
        s_max = DEFAULT_S_RANGE[1]
        start = prob.posterior.mean().reshape(1, *prob.prior.shape) + s_max * noise
        res = sample(prob.posterior, noise, solver=solver, nfe=nfe, s_max=s_max, y_start=start, seeds=seeds)
        return res.samples, res.nfe, 0, {}
    opts = dict(BUDGET_OPTIONS[method](nfe)) if method in BUDGET_OPTIONS else {}
    opts.update(spec.options.get(method, {}))
    res = solve_inverse(prob.prior, prob.operator, prob.y, prob.sigma_y, method=method, nfe=nfe,
                        seeds=list(range(spec.seed, spec.seed + spec.num)), **opts)
    return res.samples, res.nfe, int(res.info.get("vjp", 0)), opts


def _cost(prob: ExactProblem, method: str, nfe: int, num: int) -> float:
    return float(nfe) * num * prob.prior.dim * prob.prior.K


def _row(prob: ExactProblem, spec: ExactSpec, method: str, budget: int) -> dict[str, Any]:
    return {"problem": prob.name, "dim": prob.prior.dim, "n_meas": math.prod(prob.operator.out_shape),
            "sigma_y": prob.sigma_y, "num": spec.num, "method": method, "budget": budget}


def run_cell(prob: ExactProblem, ref: _Reference, spec: ExactSpec, method: str, budget: int) -> dict[str, Any]:
    """One row: the method's samples measured against the exact posterior (or a skip / failure
    with its reason)."""
    row = _row(prob, spec, method, budget)
    if method == FLOOR:
        row.update(ref.measure(ref.b), nfe=0, status="ok", seconds=0.0)
        row.update(sliced_w2=ref.floor, w2_ratio=1.0, message=f"sliced W2: the mean of {FLOOR_SETS} exact sets; "
                                                              "the other columns: the first of them")
        return row
    cost = _cost(prob, method, budget, spec.num)
    if cost > spec.max_cost:
        row.update(status=OVER_CAP, message=f"cost {cost:.2g} over the per-cell cap {spec.max_cost:.2g} "
                                             "(NFE x samples x dim x components)")
        return row
    t0 = time.perf_counter()
    try:
        x, nfe, vjp, opts = _run_method(prob, method, budget, spec)
    except (ValueError, TypeError) as e:  # a budget or operator the method refuses
        row.update(status="skipped", message=" ".join(str(e).split())[:300])
        return row
    except (FloatingPointError, RuntimeError) as e:
        row.update(status="failed", message=" ".join(str(e).split())[:300])
        return row
    row.update(nfe=nfe, vjp=vjp, options=";".join(f"{k}={v}" for k, v in sorted(opts.items())),
               seconds=round(time.perf_counter() - t0, 3))
    if not bool(torch.isfinite(x).all()):
        row.update(status="failed", message="non-finite samples")
        return row
    row.update(ref.measure(x), status="ok")
    return row


def run_exact(csv_path: str, spec: ExactSpec | None = None, *, progress: bool = True,
              on_row: Callable[[dict[str, Any], int, int], None] | None = None, **fields: Any) -> list[dict[str, str]]:
    """Run (or resume) the exact benchmark into ``csv_path``; returns the rows. ``fields`` build
    an :class:`ExactSpec` when ``spec`` is None. ``on_row(row, done, total)`` after each row
    (raising from it stops the run; rows written so far stay)."""
    spec = spec or ExactSpec(**fields)
    table = Table(csv_path, COLUMNS, KEY)
    done = table.done()
    capped = {table.row_key(r) for r in table.rows() if r["status"] == OVER_CAP}
    cells = exact_cells(spec)
    key = lambda c: (c[0], str(spec.num), c[1], str(c[2]))  # noqa: E731
    admitted = lambda c: _cost(exact_problem(c[0]), c[1], c[2], spec.num) <= spec.max_cost  # noqa: E731
    todo = [c for c in cells if key(c) not in done or (key(c) in capped and admitted(c))]
    refs: dict[str, _Reference] = {}

    def compute(c: tuple[str, str, int]) -> dict[str, Any]:
        prob = exact_problem(c[0])
        if c[0] not in refs:
            refs[c[0]] = _Reference(prob, spec.num, spec.seed)
        return run_cell(prob, refs[c[0]], spec, c[1], c[2])
    return run_into(table, [key(c) for c in cells], todo, compute, desc="inverse exact", progress=progress,
                    on_row=on_row)
