"""Every valid path x prediction x solver x schedule at NFE from its minimum up: no NaN.

Runs the exact 2-D mixture through an exact network of each prediction type on each path (the
network adapter's algebra included), with every registered solver and schedule, at each NFE in
``--nfe`` that the solver can honour.  Configurations that diffsolve refuses up front (a
budget the solver cannot use exactly, a diffusers spacing on a non-table path) are counted
apart; the result lists every run whose samples were not finite or that raised anything else.
Writes a markdown summary.

    python scripts/nan_sweep.py --out bench/results/nan_sweep.md
"""

from __future__ import annotations

import argparse
import itertools
import time
import warnings

import torch

import diffsolve
from diffsolve.denoisers import PREDICTIONS, from_network
from diffsolve.io import atomic_write_text
from diffsolve.schedules import SCHEDULES
from diffsolve.solvers import SOLVERS, NFEError, StabilityWarning


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nfe", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6, 8, 10, 15])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    g = diffsolve.exact_model("gmm-2d")
    data_rms = float(g.sample(4000, generator=torch.Generator().manual_seed(0)).pow(2).mean().sqrt())
    noise = torch.randn(args.batch, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    runs = refused = 0
    bad, big, warned = [], [], 0
    t0 = time.time()
    for path, pred in itertools.product(diffsolve.PATHS, PREDICTIONS):
        p = diffsolve.get_path(path)
        den = from_network(g.network(p, pred), p, pred)
        for solver, schedule, nfe in itertools.product(sorted(SOLVERS), SCHEDULES, args.nfe):
            adaptive = getattr(SOLVERS[solver], "adaptive", False)
            if adaptive and nfe != args.nfe[0]:
                continue
            try:
                with warnings.catch_warnings(record=True) as w:
                    warnings.simplefilter("always", StabilityWarning)
                    res = diffsolve.sample(den, noise, solver=solver, nfe=None if adaptive else nfe,
                                           schedule=schedule, seeds=list(range(args.batch)))
            except (NFEError, ValueError):
                refused += 1  # refused up front, with a message (the input tests check the messages)
                continue
            except Exception as e:  # noqa: BLE001 - anything else is a defect to list
                bad.append((path, pred, solver, schedule, nfe, f"{type(e).__name__}: {str(e)[:100]}"))
                continue
            runs += 1
            warned += bool(w)
            x = res.samples
            if not bool(torch.isfinite(x).all()):
                bad.append((path, pred, solver, schedule, nfe, "non-finite samples"))
            else:
                rms = float(x.pow(2).mean().sqrt())
                if rms > 10 * data_rms and not w:
                    big.append((path, pred, solver, schedule, nfe, f"RMS {rms / data_rms:.3g}x data, no warning"))
    lines = [f"# NaN sweep: {len(diffsolve.PATHS)} paths x {len(PREDICTIONS)} predictions x {len(SOLVERS)} solvers "
             f"x {len(SCHEDULES)} schedules x NFE {args.nfe}", "",
             f"Command: `python scripts/nan_sweep.py{' --out ' + args.out if args.out else ''}` "
             f"({time.time() - t0:.0f} s, batch {args.batch}, exact gmm-2d networks).", "",
             f"* runs: {runs}; refused up front (budget not usable exactly, spacing not defined on the path): {refused}",
             f"* non-finite or crashed: {len(bad)}",
             f"* finite but > 10x the data's RMS without a StabilityWarning: {len(big)}",
             f"* runs that warned (StabilityWarning): {warned}", ""]
    if bad or big:
        lines += ["| path | prediction | solver | schedule | NFE | what |", "|---|---|---|---|---|---|"]
        lines += [f"| {' | '.join(map(str, r))} |" for r in bad + big]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        atomic_write_text(args.out, text)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
