"""``diffsolve tune``: fit a sampling plan to a model at an NFE and write it as JSON; ``diffsolve
sample --plan FILE`` samples with it.

    diffsolve tune --model mnist --nfe 5 --out mnist-nfe5.plan.json
    diffsolve sample --model mnist --label 0 1 2 3 4 5 6 7 8 9 --num 100 --plan mnist-nfe5.plan.json
"""

from __future__ import annotations

import argparse
import math

import torch

from ..tune import TUNE_METHODS, TUNE_SEED0, tune
from .sample import cycled_labels
from .args import (UsageError, add_quiet, load_continuous_model, model_name, name_in, nfe_budget, nonneg_int,
                   output_file, path_name, positive_int)

__all__ = ["add_parser", "cmd_tune"]


def cmd_tune(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    model = load_continuous_model(args.model)
    k = int(getattr(model, "num_classes", 0) or 0)
    cond = None
    labels = cycled_labels(args, model, args.batch, allow_null=True)
    if labels is not None:
        cond = {"labels": labels}
    elif k:
        cond = {"labels": torch.arange(args.batch) % k}  # every class, cycled over the tuning batch
    seeds = list(range(args.seed, args.seed + args.batch))
    try:
        plan = tune(model, args.nfe, shape=tuple(model.shape), cond=cond, budget=args.budget, method=args.method,
                    seeds=seeds, path=args.path, progress=not args.quiet)
    except ValueError as e:
        raise UsageError(str(e)) from None
    plan.save(args.out)
    f = plan.fitted
    print(f"tuned {args.model} at {plan.nfe} NFE ({plan.method}): {plan.solver} {plan.options or ''} on levels "
          + " ".join(f"{v:.4g}" for v in plan.sigmas))
    print(f"distance to the teacher on {f['holdout']} held-out tuning samples: {f['start_rms']:.4g} ({f['start']} "
          f"grid) -> {f['tuning_rms']:.4g} ({f['chosen']}); cost {plan.cost['calls']} calls of {len(plan.seeds)} samples, "
          f"{plan.cost['seconds']:.0f} s; wrote {args.out}")
    for c in f["candidates"]:
        print(f"  {c['solver']:<10} ending {c['final']:<5} start {c['start_rms']:.4g} -> {c['rms']:.4g}"
              + ("" if math.isfinite(c["rms"]) else " (diverged)"))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="fit a sampling plan (solver, levels) to a model at an NFE (docs/tuning.md)")
    p.add_argument("--model", default="mnist", type=model_name, help="a shipped model, a checkpoint or an exact mixture")
    p.add_argument("--nfe", type=nfe_budget, required=True, help="network calls of the plan")
    p.add_argument("--out", required=True, type=output_file((".json",)), help="the plan file to write (.json)")
    p.add_argument("--method", default="ld3", type=name_in("tuning method", TUNE_METHODS), help=", ".join(TUNE_METHODS))
    p.add_argument("--budget", type=positive_int, default=20_000,
                   help="most network calls of the whole tuning batch, teacher included (default 20000)")
    p.add_argument("--batch", type=positive_int, default=128, help="tuning samples (default 128)")
    p.add_argument("--seed", type=nonneg_int, default=TUNE_SEED0,
                   help=f"first per-sample seed of the tuning noise (default {TUNE_SEED0}: far from sampling's 0..)")
    p.add_argument("--label", type=nonneg_int, nargs="+", default=None,
                   help="class labels cycled over the tuning batch (default: every class)")
    p.add_argument("--path", default=None, type=path_name, help="the path (default: the model's)")
    p.add_argument("--threads", type=positive_int, default=2)
    add_quiet(p, "no progress bar")
    p.set_defaults(func=cmd_tune)
