"""Fitting the ``auto`` rule's warps (:mod:`diffsolve.auto`): LD3's loss pooled over several models
and NFEs, for each candidate solver; then the solver of least pooled loss at each NFE.

For one solver, the loss of the warp logits ``theta`` is the mean over the pool's models and the
NFEs of ``log RMS(samples - teacher)`` on each model's tuning noise (seeds from
:data:`~diffsolve.tune.TUNE_SEED0`, disjoint from the benchmark's), minimised by
:func:`~diffsolve.tune.adam.adam_fd`. The pool is the benchmark's three exact mixtures and the
trained digits model on the DDPM path: exact and trained models together, so that the rule is not
fitted to one of them. Progress is written atomically to a JSON file after every iteration and a
rerun resumes from it.

    python -m diffsolve.bench.auto_fit --solver deis --out bench/results/auto-fit-deis.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from typing import Any, Sequence

import numpy as np
import torch

from ..auto import warp_levels, warp_logits_of
from ..denoisers import from_network
from ..io import atomic_write
from ..schedules import make_schedule
from ..solvers import get_solver
from ..tune.adam import adam_fd
from ..tune.fit import TUNE_SEED0
from ..tune.teacher import Teacher
from .networks import BoundNet, cond_for, model_network

__all__ = ["POOL", "FIT_NFES", "pool_teachers", "pooled_errors", "fit_warp"]

#: (model, tuning batch): the exact mixtures and the trained digits model, on the DDPM path
POOL: tuple[tuple[str, int], ...] = (("gmm-2d", 256), ("gmm-64", 128), ("gmm-3072", 64), ("digits", 128))
#: the NFEs the pooled loss averages over
FIT_NFES: tuple[int, ...] = (4, 5, 6, 8, 10, 12, 15, 20)


def pool_teachers(pool: Sequence[tuple[str, int]] = POOL, teacher_steps: int = 100) -> dict[str, Teacher]:
    """A :class:`~diffsolve.tune.teacher.Teacher` per model of the pool, on its own tuning noise."""
    out = {}
    for name, batch in pool:
        m, net, p, pred, _ = model_network(name, "ddpm-linear", "eps")
        den = from_network(BoundNet(net, cond_for(m, batch)), p, pred)
        out[name] = Teacher(den, seeds=[TUNE_SEED0 + b for b in range(batch)], shape=tuple(m.shape), path=p,
                            steps=teacher_steps)
    return out


def pooled_errors(teachers: dict[str, Teacher], solver: str, options: dict[str, Any], logits: Sequence[float],
                  nfes: Sequence[int] = FIT_NFES) -> dict[tuple[str, int], float]:
    """RMS error to the teacher of each (model, NFE) on the warp of ``logits`` (ending at s_min)."""
    slv = get_solver(solver, **options)
    out = {}
    for name, t in teachers.items():
        for n in nfes:
            steps = slv.for_nfe(n, False).steps_for_nfe(n, False)
            out[(name, n)] = t.error(solver, warp_levels(logits, steps + 1, t.s_start, t.s_lo), options)
    return out


def fit_warp(solver: str, options: dict[str, Any], out: str, *, K: int = 6, iters: int = 30, lr: float = 0.1,
             eps: float = 0.01,
             nfes: Sequence[int] = FIT_NFES, pool: Sequence[tuple[str, int]] = POOL, log=print) -> dict[str, Any]:
    """Fit one solver's warp; resumes from (and writes after every iteration) the JSON ``out``."""
    state: dict[str, Any] = {}
    if os.path.exists(out):
        with open(out) as f:
            state = json.load(f)
    teachers = pool_teachers(pool)
    if "theta" in state:
        theta0 = np.array(state["theta"])
        done = int(state["iters_done"])
    else:  # start from EDM's rho = 7 grid, read through the warp
        ref = make_schedule("karras", 40, s_min=0.01, s_max=157.0, final="s_min").tolist()
        theta0, done = np.array(warp_logits_of(ref, K)), 0
    t0, prior = time.time(), float(state.get("seconds", 0.0))

    def loss(th: np.ndarray) -> float:
        errs = pooled_errors(teachers, solver, options, th.tolist(), nfes)
        v = list(errs.values())
        return sum(math.log(e) for e in v) / len(v) if all(0 < e < math.inf for e in v) else math.inf

    def save(it: int, f: float, th: np.ndarray) -> None:
        state.update(solver=solver, options=options, K=K, nfes=list(nfes), pool=[list(p) for p in pool],
                     theta=th.tolist(), iters_done=done + it, loss=f, seconds=round(prior + time.time() - t0, 1))
        atomic_write(out, lambda tmp: open(tmp, "w").write(json.dumps(state, indent=1)))
        log(f"{solver} iter {done + it}: pooled mean log rms {f:.4f} ({time.time() - t0:.0f} s)")

    best_th, best, _ = adam_fd(loss, theta0, iters=max(1, iters - done), lr=lr, eps=eps, on_iter=save)
    errs = pooled_errors(teachers, solver, options, best_th.tolist(), nfes)
    state.update(theta=best_th.tolist(), loss=best, iters_done=iters, seconds=round(prior + time.time() - t0, 1),
                 errors={f"{m}@{n}": e for (m, n), e in errs.items()}, calls={m: t.calls for m, t in teachers.items()})
    atomic_write(out, lambda tmp: open(tmp, "w").write(json.dumps(state, indent=1)))
    return state


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--solver", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--knots", type=int, default=6)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--eps", type=float, default=0.01, help="finite-difference step of the logits")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    fit_warp(a.solver, {"lower_order_final": True}, a.out, K=a.knots, iters=a.iters, lr=a.lr, eps=a.eps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
