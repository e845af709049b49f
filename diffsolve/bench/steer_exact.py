"""The exact steering benchmark: tilted targets known in closed form, every method against the
total network calls it spends.

Problems (the target is ``p(x) exp(lam r(x)) / Z``, lam = 1):

* ``2d-linear``: gmm-2d, ``r = <(2, 0), x>`` (a mild tilt: the exact tilted mixture from
  :meth:`Linear.tilt`);
* ``2d-likelihood``: gmm-2d, the measurement ``x_1 + 0.5 x_2 = 0.5`` with sigma_y = 0.05 (a
  sharp tilt: the exact posterior mixture);
* ``64-linear``: gmm-64, ``r = <a, x>`` with |a| = 6 along a fixed random direction;
* ``64-inpaint``: gmm-64, 16 of 64 coordinates observed with sigma_y = 0.1 (the posterior).

Each cell runs a method with ``particles`` in :data:`PARTICLES` at base NFE 20 on ``num``
samples with seeds disjoint from the reference's, and records the *counted* network calls per
sample (``res.nfe``), the sliced W2 distance and the mode-weight TV to ``num`` exact samples of
the target (with their floors: two exact sample sets), the mean reward (with the exact target's)
and, for methods with a normalising-constant estimate, its log error where Z is known.
Written resumably (:class:`~.store.Table`) to PREFIX.csv; :func:`write_steer_report` makes the
table and the figure.
"""

from __future__ import annotations


from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import torch

from ..metrics.exact import mode_tv, mode_tv_floor, sliced_w2
from ..models.gmm import builtin
from ..rewards import Linear
from ..steer import steer
from .inverse_store import run_into
from .store import Table

__all__ = ["PROBLEMS", "PARTICLES", "DEFAULT_METHODS", "SteerProblem", "steer_problem", "run_steer_exact",
           "COLUMNS"]

F64 = torch.float64
PROBLEMS = ("2d-linear", "2d-likelihood", "64-linear", "64-inpaint")
#: particles (or candidates) per sample; the total calls follow from each method's cost
PARTICLES = (1, 4, 16, 64)
DEFAULT_METHODS = ("best-of-n", "fk", "tds")
BASE_NFE = 20
COLUMNS = ["problem", "num", "method", "particles", "nfe", "sliced_w2", "sliced_w2_floor", "mode_tv", "mode_tv_floor",
           "reward", "reward_exact", "log_z_error", "status", "message"]
KEY = ("problem", "num", "method", "particles")


@dataclass(frozen=True)
class SteerProblem:
    name: str
    prior: Any
    reward: Any
    target: Any          # a sampleable exact mixture with weights and assign
    log_z: float | None  # log E_p[exp(r)] where known (the linear tilts)


@lru_cache(maxsize=None)
def steer_problem(name: str) -> SteerProblem:
    """One of :data:`PROBLEMS` with its exact tilted target."""
    from ..inverse import LinearOperator, Problem

    if name in ("2d-linear", "64-linear"):
        g = builtin("gmm-2d" if name == "2d-linear" else "gmm-64")
        if name == "2d-linear":
            a = torch.tensor([2.0, 0.0], dtype=F64)
        else:
            a = torch.randn(g.dim, dtype=F64, generator=torch.Generator().manual_seed(0))
            a = 6.0 * a / a.norm()
        r = Linear(a.reshape(g.shape))
        tilt, log_z = r.tilt(g, 1.0)
        return SteerProblem(name, g, r, tilt, log_z)
    if name == "2d-likelihood":
        g = builtin("gmm-2d")
        A = LinearOperator(torch.tensor([[1.0, 0.5]], dtype=F64), (2,))
        y, sy = torch.tensor([[0.5]], dtype=F64), 0.05
    elif name == "64-inpaint":
        g = builtin("gmm-64")
        A = LinearOperator(torch.eye(g.dim, dtype=F64)[:16], g.shape)
        x = g.sample(1, generator=torch.Generator().manual_seed(3))
        y, sy = A.forward(x) + 0.1 * torch.randn(1, 16, dtype=F64, generator=torch.Generator().manual_seed(4)), 0.1
    else:
        raise ValueError(f"unknown steering problem {name!r}; accepted: {', '.join(PROBLEMS)}")
    return SteerProblem(name, g, Problem(A, y, sy), g.posterior(A, y[0], sy), None)


class _Reference:
    """``num`` exact target samples, the floors, and the target's mean reward (100k samples)."""

    def __init__(self, prob: SteerProblem, num: int):
        t = prob.target
        self.x = t.sample(num, generator=torch.Generator().manual_seed(1))
        x2 = t.sample(num, generator=torch.Generator().manual_seed(2))
        self.sw2_floor = sliced_w2(x2, self.x)
        self.tv_floor = mode_tv_floor(t.weights, num)
        big = t.sample(100_000, generator=torch.Generator().manual_seed(3))
        self.reward = float(torch.cat([prob.reward(b) for b in big.split(10_000)]).mean())


def run_cell(prob: SteerProblem, ref: _Reference, method: str, particles: int, num: int) -> dict[str, Any]:
    row: dict[str, Any] = {"problem": prob.name, "num": num, "method": method, "particles": particles,
                           "sliced_w2_floor": ref.sw2_floor, "mode_tv_floor": ref.tv_floor, "reward_exact": ref.reward}
    try:
        res = steer(prob.prior, prob.reward, method, num=num, particles=particles, nfe=BASE_NFE,
                    seeds=range(10_000, 10_000 + num))
    except (ValueError, TypeError) as e:  # a method that cannot run this cell says why, in the table
        return {**row, "status": "refused", "message": str(e).splitlines()[0][:200]}
    x = res.samples
    row.update(nfe=res.nfe, sliced_w2=sliced_w2(x, ref.x), mode_tv=mode_tv(prob.target, x),
               reward=float(prob.reward(x).mean()), status="ok")
    if prob.log_z is not None and "log_z" in res.info:
        z = res.info["log_z"].exp().mean()   # the estimates are unbiased in Z: average Z, then log
        row["log_z_error"] = float(z.log()) - prob.log_z
    return row


def run_steer_exact(csv_path: str, *, problems=PROBLEMS, methods=DEFAULT_METHODS, particles=PARTICLES,
                    num: int = 500, progress: bool = True,
                    on_row: Callable[[dict[str, Any], int, int], None] | None = None) -> list[dict[str, str]]:
    """Run (or resume) the benchmark into ``csv_path``; returns the rows."""
    table = Table(csv_path, COLUMNS, KEY)
    done = table.done()
    cells = [(p, m, k) for p in problems for m in methods for k in particles]
    key = lambda c: (c[0], str(num), c[1], str(c[2]))  # noqa: E731
    todo = [c for c in cells if key(c) not in done]
    refs: dict[str, _Reference] = {}

    def compute(c):
        prob = steer_problem(c[0])
        if c[0] not in refs:
            refs[c[0]] = _Reference(prob, num)
        return run_cell(prob, refs[c[0]], c[1], c[2], num)
    return run_into(table, [key(c) for c in cells], todo, compute, desc="steer exact", progress=progress,
                    on_row=on_row)


