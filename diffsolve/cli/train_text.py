"""``diffsolve train-text``: train the character text models, resumably.

    diffsolve train-text --preset shakespeare --out runs/shakespeare --export
    diffsolve train-text --preset shakespeare-ar --out runs/shakespeare-ar --export

Kill it at any time; the same command resumes from ``OUT/state.pt``. ``--export`` copies the
model to the shipped weights (``diffsolve/models/weights/NAME.*``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import shutil

from ..discrete.train import TEXT_PRESETS, text_preset, train_text
from ..io import atomic_write
from ..models.checkpoint import WEIGHTS_DIR
from .args import add_quiet, name_in, positive_float, positive_int

__all__ = ["add_parser", "cmd_train_text"]

_FLAGS = {"steps": positive_int, "batch_size": positive_int, "threads": positive_int, "lr": positive_float,
          "dim": positive_int, "depth": positive_int, "heads": positive_int, "seq_len": positive_int}


def cmd_train_text(args: argparse.Namespace) -> int:
    over = {k: getattr(args, k) for k in _FLAGS if getattr(args, k) is not None}
    cfg = text_preset(args.preset, **over)
    out = args.out or f"runs/{args.preset}"
    command = "diffsolve " + " ".join(shlex.quote(a) for a in args.argv)
    res = train_text(cfg, out, resume=not args.restart, progress=not args.quiet, max_seconds=args.max_seconds,
                     command=command)
    print(f"trained {args.preset}: {res['step']} steps, {res['seconds']:.0f} s, {res['params']} parameters, "
          f"held-out loss {res['held_out']:.4f} nats/char; model {out}/model.json")
    if args.export:
        for ext in (".safetensors", ".json"):  # weights first: a JSON never points at missing weights
            src = os.path.join(out, "model" + ext)
            atomic_write(os.path.join(WEIGHTS_DIR, args.preset + ext), lambda tmp: shutil.copyfile(src, tmp))
        print(f"exported {os.path.join(WEIGHTS_DIR, args.preset)}.json")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-text", help="train the character text models (masked diffusion or the AR reference)")
    p.add_argument("--preset", required=True, type=name_in("preset", TEXT_PRESETS), help=", ".join(TEXT_PRESETS))
    p.add_argument("--out", default=None, help="run directory (default runs/PRESET); resumes if it holds state.pt")
    p.add_argument("--restart", action="store_true", help="ignore an existing state.pt")
    p.add_argument("--export", action="store_true", help="copy the model to the shipped weights")
    p.add_argument("--max-seconds", type=positive_float, default=None, help="stop (and checkpoint) after this wall time")
    add_quiet(p, "no progress bar")
    g = p.add_argument_group("configuration (overrides the preset)")
    for name, typ in _FLAGS.items():
        g.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, default=None)
    p.set_defaults(func=cmd_train_text)
