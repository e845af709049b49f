"""``diffsolve sample`` and ``diffsolve solvers``."""

from __future__ import annotations

import argparse
import os
import sys

import torch


def _print_table(rows: list[dict], cols: list[str], file=sys.stdout) -> None:
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols), file=file)
    print("  ".join("-" * widths[c] for c in cols), file=file)
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols), file=file)


def cmd_solvers(args) -> int:
    from . import solvers

    _print_table(solvers(), ["name", "order", "stochastic", "nfe", "aliases", "paper"])
    return 0


def load_model(name: str):
    """A sampleable model by name: an exact mixture, or (when available) a shipped checkpoint."""
    from .models.gmm import BUILTINS, builtin

    if name in BUILTINS:
        return builtin(name)
    try:
        from .models.checkpoint import load  # shipped trained models
    except ImportError:
        raise ValueError(f"unknown model {name!r}; accepted: {', '.join(BUILTINS)}") from None
    return load(name)


def cmd_sample(args) -> int:
    from .plots import save_samples
    from .sample import sample
    from .solvers.base import NoiseSource

    model = load_model(args.model)
    shape = tuple(model.shape)
    seeds = list(range(args.seed, args.seed + args.num))
    noise = NoiseSource.initial(seeds, shape)
    cond = {}
    if args.label is not None:
        cond["labels"] = torch.tensor([args.label[i % len(args.label)] for i in range(args.num)])
    res = sample(model, noise, solver=args.solver, nfe=args.nfe, schedule=args.schedule, seeds=seeds,
                 cond=cond, progress=not args.quiet, **({"path": args.path} if args.path else {}))
    x = res.samples.float()
    if args.out:
        save_samples(x, args.out, title=f"{args.model}: {res.solver}, {res.nfe} NFE, {args.schedule}")
    if args.save_tensor:
        from .io import atomic_save_tensor

        atomic_save_tensor(x, args.save_tensor)
    print(f"{args.num} samples from {args.model} with {res.solver}: {res.nfe} NFE, "
          f"noise levels {float(res.sigmas[0]):.4g} -> {float(res.sigmas[-1]):.4g}"
          + (f"; wrote {os.path.abspath(args.out)}" if args.out else ""))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("solvers", help="list every solver with its order, NFE rule and paper")
    p.set_defaults(func=cmd_solvers)

    p = sub.add_parser("sample", help="sample a model and write a picture")
    p.add_argument("--model", default="gmm-2d", help="an exact mixture (gmm-2d, gmm-64, gmm-3072) or a shipped model")
    p.add_argument("--solver", default="dpm++2m")
    p.add_argument("--nfe", type=int, default=10)
    p.add_argument("--schedule", default="karras")
    p.add_argument("--path", default=None, help="path whose noise range the schedule spans (default: the model's)")
    p.add_argument("--num", type=int, default=1000, help="number of samples")
    p.add_argument("--seed", type=int, default=0, help="first per-sample seed")
    p.add_argument("--label", type=int, nargs="*", default=None, help="class labels (cycled) for conditional models")
    p.add_argument("--out", default="samples.png", help="picture to write (scatter for 2-D, grid for images)")
    p.add_argument("--save-tensor", default=None, help="also save the samples (.pt)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sample)
