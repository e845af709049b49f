"""``diffsolve.tune``: fit a sampling :class:`~diffsolve.plan.Plan` to a model at a given NFE.

Tuning runs the model on its own noise (per-sample ``seeds``, never the noise you evaluate on),
computes a high-accuracy teacher solution, and chooses the solver and the noise levels whose
samples come closest to the teacher's at ``nfe`` network calls:

* ``method="gits"``: the grid of least summed one-step error on the teacher trajectory, by
  dynamic programming (:mod:`~diffsolve.tune.gits`), for each candidate solver;
* ``method="ld3"`` (default): the levels learned against the teacher (:mod:`~diffsolve.tune.ld3`),
  started from the best of EDM's grid, the GITS grid and ``auto``'s, for the ``refine``
  candidates whose start is closest to the teacher (the rest of the budget split evenly).

A quarter of the tuning batch is held out: LD3 fits the levels on the rest, and every choice
(the start, whether the learned grid replaces it, the winning candidate) is made by the distance
on the held-out samples, so a grid that only suits a few hard fitting samples is not kept.

The best candidate on the tuning noise becomes the plan. Every network call is counted against
``budget`` (calls of the whole tuning batch); the plan records its cost and its seeds.

    >>> import diffsolve
    >>> gmm = diffsolve.exact_model("gmm-2d")
    >>> plan = tune(gmm, 5, shape=(2,), path="edm", batch=32, budget=3000, teacher_steps=20)
    >>> plan.nfe, plan.method, plan.cost["calls"] <= 3000
    (5, 'ld3', True)
"""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

from ..checks import check_choice, check_int
from ..plan import Plan
from ..validate import check_nfe, check_seeds
from ..auto import auto_plan
from .gits import gits_grid
from .levels import LevelParam
from .ld3 import ld3_levels
from .teacher import Teacher

__all__ = ["tune", "TUNE_METHODS", "DEFAULT_CANDIDATES", "TUNE_SEED0"]

TUNE_METHODS = ("ld3", "gits")

#: the first per-sample seed of the default tuning noise (far from the seeds sampling and the
#: benchmark use, 0.. and k * 1_000_000 + b)
TUNE_SEED0 = 7 << 40

#: (solver, ending, options) tried by default: the multistep solvers that win our sweeps at
#: 4-20 NFE, each ending at the lowest trained level as diffusers' schedulers do
DEFAULT_CANDIDATES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("unipc-bh2", "s_min", {"lower_order_final": True}),
    ("deis", "s_min", {"lower_order_final": True}),
    ("dpm++3m", "s_min", {"lower_order_final": True}),
)


def tune(denoiser: Any, nfe: int, *, shape: Sequence[int], cond: dict[str, Any] | None = None,
         budget: int = 20_000, method: str = "ld3", seeds: Sequence[int] | None = None, batch: int = 128,
         path: Any = None, candidates: Sequence[tuple[str, str, dict[str, Any]]] = DEFAULT_CANDIDATES,
         teacher_steps: int = 100, max_iters: int = 200, fine: int = 64, refine: int = 1,
         progress: bool = False) -> Plan:
    """Fit a plan for sampling ``denoiser`` with ``nfe`` network calls.

    Args:
        denoiser: a Denoiser (or ``D(y, s)`` with ``path=``).
        nfe: the network calls of the plan.
        shape: the shape of one sample (without the batch).
        cond: keyword arguments of the denoiser for the tuning batch (e.g. ``{"labels": ...}``
            with one label per tuning sample).
        budget: the most network calls (each on the whole tuning batch) tuning may make,
            teacher included; a budget too small for the teacher and one step of the method
            is refused, naming the least that works.
        method: ``"ld3"`` or ``"gits"``.
        seeds: the per-sample seeds of the tuning noise (default ``TUNE_SEED0 + b``, ``b <
            batch``); tuning is a pure function of them.
        candidates: (solver, ending ``"zero"``/``"s_min"``, options) to choose between.
        refine: how many of the candidates (those starting closest to the teacher) LD3 refines.

    Returns:
        a :class:`~diffsolve.plan.Plan` whose ``fitted`` records the teacher, the tuning
        distance of every candidate before and after, and whose ``cost`` says what tuning cost.
    """
    nfe = check_nfe(nfe)
    if nfe is None:
        raise ValueError("tune needs an integer nfe (the network calls of the plan), got None")
    method = check_choice("tune", "method", method, TUNE_METHODS)
    for name, v, lo in (("budget", budget, 1), ("batch", batch, 1), ("teacher_steps", teacher_steps, 4),
                        ("max_iters", max_iters, 1), ("fine", fine, 4), ("refine", refine, 1)):
        check_int("tune", name, v, minimum=lo)
    if seeds is None:
        seeds = [TUNE_SEED0 + b for b in range(batch)]
    seeds = check_seeds(list(seeds), len(list(seeds)))
    cands = _check_candidates(candidates)
    teacher_calls = 4 * teacher_steps + 1
    least = teacher_calls + (fine + 1) * 5 + len(cands) * 2 * nfe + (0 if method == "gits" else
                                                                     min(refine, len(cands)) * nfe * (2 * nfe + 5))
    if budget < least:
        raise ValueError(f"tune: budget={budget} network calls cannot pay for the teacher ({teacher_calls} calls) "
                         f"and one step of {method!r} for {len(cands)} candidate(s) at nfe={nfe}; "
                         f"use budget >= {least}")
    t0 = time.time()
    teacher = Teacher(denoiser, seeds=seeds, shape=shape, path=path, cond=cond, steps=teacher_steps,
                      holdout=len(seeds) // 4 if len(seeds) >= 8 else 0)
    teacher.budget = budget
    bar = _bar(progress, budget, teacher.calls)
    results, gits_cache = [], {}
    auto = auto_plan(nfe, teacher.path, s_min=teacher.s_lo, s_max=teacher.s_start)
    for solver, final, opts in cands:  # every candidate from its better start
        n_steps = teacher.steps_for(solver, nfe, final, opts)
        if n_steps < 2:
            continue  # one step leaves no level to choose
        key = (n_steps, final)
        if key not in gits_cache:
            gits_cache[key] = gits_grid(teacher, n_steps, final, fine=fine)
        inits = {"gits": gits_cache[key], "karras": teacher.karras(n_steps, final)}
        if auto.solver == solver and auto.final == final and auto.options == opts:
            inits["auto"] = list(auto.sigmas)
        errs = {name: teacher.errors(solver, g, opts) for name, g in inits.items()}
        start = min(errs, key=lambda n: errs[n][1])  # chosen on the held-out samples
        results.append({"solver": solver, "final": final, "options": opts, "steps": n_steps, "start": start,
                        "start_rms": errs[start][1], "init_rms": {n: e[1] for n, e in errs.items()},
                        "rms": errs[start][1], "grid": inits[start], "chosen": start})
    if bar is not None:
        bar.n = teacher.calls
        bar.refresh()
    if method == "ld3":
        chosen = sorted(results, key=lambda r: r["start_rms"])[:refine]
        for k, entry in enumerate(chosen):
            final, n_steps = entry["final"], entry["steps"]
            lp = LevelParam(teacher.s_start, teacher.s_lo, n_steps - 1 if final == "zero" else n_steps, final)
            share = (budget - teacher.calls) // (len(chosen) - k)  # the rest, split evenly
            iters = max(1, min(max_iters, share // ((2 * lp.size + 1) * nfe)))
            teacher.budget = min(budget, teacher.calls + share) - nfe  # one run kept for the held-out check

            def tick(it: int, f: float, solver: str = entry["solver"]) -> None:
                if bar is not None:
                    bar.n = teacher.calls
                    bar.set_postfix_str(f"{solver} rms {math.exp(f):.3g}", refresh=True)

            th, best, _ = ld3_levels(teacher, entry["solver"], entry["options"], lp, lp.theta_of(entry["grid"]),
                                     iters=iters, on_iter=tick)
            teacher.budget = budget
            check = teacher.errors(entry["solver"], lp.grid(th), entry["options"])[1]
            entry["iters"], entry["ld3_fit_rms"], entry["ld3_rms"] = iters, math.exp(best), check
            if check < entry["rms"]:  # kept only if it is better on the held-out samples too
                entry["grid"], entry["rms"], entry["chosen"] = lp.grid(th), check, "ld3"
    if bar is not None:
        bar.n = teacher.calls
        bar.close()
    if not results:
        raise ValueError(f"tune: no candidate solver leaves a level to choose at nfe={nfe}; use nfe >= 3")
    win = min(results, key=lambda r: r["rms"])
    fitted = {"teacher": teacher.teacher, "tuning_rms": win["rms"], "start": win["start"], "chosen": win["chosen"],
              "holdout": teacher.holdout,
              "start_rms": win["start_rms"],
              "candidates": [{k: v for k, v in r.items() if k not in ("grid", "steps")} for r in results],
              "batch": len(seeds)}
    cost = {"calls": teacher.calls, "rows": teacher.calls * len(seeds), "seconds": round(time.time() - t0, 1)}
    return Plan(solver=win["solver"], sigmas=tuple(win["grid"]), nfe=nfe, path=None if teacher.path is None else teacher.path.name,
                options=dict(win["options"]), method=method, cost=cost, seeds=tuple(seeds), fitted=fitted)


def _check_candidates(candidates: Any) -> list[tuple[str, str, dict[str, Any]]]:
    from ..solvers import get_solver

    out = []
    for c in candidates:
        if not (isinstance(c, (tuple, list)) and len(c) == 3 and isinstance(c[2], dict)):
            raise ValueError(f"tune: a candidate is (solver, ending 'zero' or 's_min', options dict), got {c!r}")
        solver, final, opts = c
        slv = get_solver(solver, **opts)  # unknown names and options refused here
        if slv.stochastic or getattr(slv, "adaptive", False):
            raise ValueError(f"tune: candidate solver {solver!r} is {'stochastic' if slv.stochastic else 'adaptive'}; "
                             "tuning fits deterministic fixed-budget solvers")
        if final not in ("zero", "s_min"):
            raise ValueError(f"tune: candidate ending {final!r} is not accepted; accepted: 'zero', 's_min'")
        out.append((solver, final, dict(opts)))
    if not out:
        raise ValueError("tune: candidates is empty; give at least one (solver, ending, options)")
    return out


def _bar(progress: bool, total: int, start: int):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc="tune", unit="call")
