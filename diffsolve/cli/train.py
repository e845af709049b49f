"""``diffsolve train``: train a model from a preset or from flags, resumably.

    diffsolve train --preset digits --out runs/digits --export
    diffsolve train --data moons --arch mlp --path flow --prediction velocity --steps 2000 --out runs/m

Kill it at any time; the same command resumes from ``OUT/state.pt``. ``--export`` copies the
EMA checkpoint to the shipped weights (``diffsolve/models/weights/NAME.*``, float16 for images).
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex

from ..data import DATASETS
from ..nets import ARCHITECTURES
from ..train import NOISE_DISTS, PRESETS, WEIGHTINGS, TrainConfig, preset, train
from ..train.export import EXPORT_DTYPES, check_export_name, export_run
from .args import (add_quiet, json_object, library_check, name_in, nonneg_float, nonneg_int, path_name,
                   positive_float, positive_int, prediction_name, probability, seed_arg)

__all__ = ["add_parser", "cmd_train"]

#: the TrainConfig fields settable from the command line, with their argument types
CONFIG_FLAGS = {
    "data": name_in("data set", DATASETS), "data_split": str, "arch": name_in("architecture", ARCHITECTURES),
    "arch_kwargs": json_object, "path": path_name, "prediction": prediction_name,
    "noise_dist": name_in("noise distribution", NOISE_DISTS), "weighting": name_in("weighting", WEIGHTINGS),
    "sigma_data": positive_float, "label_dropout": probability, "batch_size": positive_int, "lr": positive_float,
    "weight_decay": nonneg_float, "warmup": nonneg_int, "steps": positive_int, "ema_decay": probability,
    "seed": seed_arg, "threads": positive_int, "init_from": str,
}


def _config(args: argparse.Namespace) -> TrainConfig:
    base = preset(args.preset) if args.preset else TrainConfig()
    over = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
            if getattr(args, f.name, None) is not None}
    return dataclasses.replace(base, **over)


def cmd_train(args: argparse.Namespace) -> int:
    cfg = _config(args)
    name = args.preset or cfg.data
    out = args.out or f"runs/{name}"
    command = "diffsolve " + " ".join(shlex.quote(a) for a in args.argv)
    res = train(cfg, out, resume=not args.restart, progress=not args.quiet, ckpt_every_s=args.ckpt_every_s,
                max_seconds=args.max_seconds, command=command)
    last = res["losses"][-1][1] if res["losses"] else float("nan")
    print(f"trained {name}: {res['step']} steps, {res['seconds']:.0f} s, {res['params']} parameters, "
          f"last loss {last:.4f}; checkpoint {out}/model.json")
    if args.export:
        plain = args.preset is not None and dataclasses.replace(cfg, steps=0) == preset(args.preset, steps=0)
        p = export_run(out, args.export_name or name, args.export_dtype, preset=args.preset if plain else None)
        print(f"exported {p}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a small diffusion/flow model (presets reproduce the shipped ones)")
    p.add_argument("--preset", default=None, type=name_in("preset", PRESETS), help=", ".join(PRESETS))
    p.add_argument("--out", default=None, help="run directory (default runs/NAME); resumes if it holds state.pt")
    p.add_argument("--restart", action="store_true", help="ignore an existing state.pt")
    p.add_argument("--export", action="store_true", help="copy the EMA weights to the shipped models")
    p.add_argument("--export-name", default=None, type=library_check("export_name", check_export_name),
                   help="the shipped name to export as (default: the preset's or the data's)")
    p.add_argument("--export-dtype", default="float16", type=name_in("export dtype", EXPORT_DTYPES))
    p.add_argument("--max-seconds", type=positive_float, default=None, help="stop (and checkpoint) after this wall time")
    p.add_argument("--ckpt-every-s", type=positive_float, default=300.0, help="seconds between checkpoints")
    add_quiet(p, "no progress bar")
    g = p.add_argument_group("configuration (overrides the preset)")
    for name, typ in CONFIG_FLAGS.items():
        g.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, default=None)
    g.add_argument("--conditional", dest="conditional", action="store_const", const=True, default=None)
    p.set_defaults(func=cmd_train)
