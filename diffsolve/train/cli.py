"""``diffsolve train``: train a model from a preset or from flags, resumably.

    diffsolve train --preset digits --out runs/digits --export
    diffsolve train --data moons --arch mlp --path flow --prediction velocity --steps 2000 --out runs/m

Kill it at any time; the same command resumes from ``OUT/state.pt``. ``--export`` copies the
EMA checkpoint to the shipped weights (``diffsolve/models/weights/NAME.*``, float16 for images).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys


def _config(args):
    from .loop import TrainConfig
    from .presets import preset

    base = preset(args.preset) if args.preset else TrainConfig()
    over = {}
    for f in dataclasses.fields(TrainConfig):
        v = getattr(args, f.name, None)
        if v is not None:
            over[f.name] = json.loads(v) if f.name == "arch_kwargs" else v
    return dataclasses.replace(base, **over)


def export(out_dir: str, name: str, dtype: str = "float16", preset: str | None = None) -> str:
    """Copy the EMA checkpoint of a run to the shipped weights as ``name``."""
    import os

    import torch
    from safetensors.torch import load_file

    from ..models.checkpoint import WEIGHTS_DIR, save

    with open(os.path.join(out_dir, "model.json")) as f:
        meta = json.load(f)
    sd = load_file(os.path.join(out_dir, "model.safetensors"))
    meta = {k: v for k, v in meta.items() if k not in ("weights", "weights_dtype", "format")}
    meta["name"] = name
    tr = meta.setdefault("training", {})
    if preset is not None:
        # runs are deterministic and resume bit for bit, so this reproduces the exported EMA weights
        tr["reproduce"] = f"diffsolve train --preset {preset} --steps {tr.get('steps')} --export"
    return save(os.path.join(WEIGHTS_DIR, name), sd, meta, getattr(torch, dtype))


def cmd_train(args) -> int:
    from .loop import train

    cfg = _config(args)
    name = args.preset or cfg.data
    out = args.out or f"runs/{name}"
    command = "diffsolve " + " ".join(shlex.quote(a) for a in (args.argv if args.argv is not None else sys.argv[1:]))
    res = train(cfg, out, resume=not args.restart, progress=not args.quiet, ckpt_every_s=args.ckpt_every_s,
                max_seconds=args.max_seconds, command=command)
    last = res["losses"][-1][1] if res["losses"] else float("nan")
    print(f"trained {name}: {res['step']} steps, {res['seconds']:.0f} s, {res['params']} parameters, "
          f"last loss {last:.4f}; checkpoint {out}/model.json")
    if args.export:
        from .presets import preset

        plain = args.preset is not None and dataclasses.replace(cfg, steps=0) == preset(args.preset, steps=0)
        p = export(out, args.export_name or name, args.export_dtype, preset=args.preset if plain else None)
        print(f"exported {p}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a small diffusion/flow model (presets reproduce the shipped ones)")
    p.add_argument("--preset", default=None, help="mnist, digits, moons, rings or checker")
    p.add_argument("--out", default=None, help="run directory (default runs/NAME); resumes if it holds state.pt")
    p.add_argument("--restart", action="store_true", help="ignore an existing state.pt")
    p.add_argument("--export", action="store_true", help="copy the EMA weights to the shipped models")
    p.add_argument("--export-name", default=None)
    p.add_argument("--export-dtype", default="float16", choices=["float16", "float32"])
    p.add_argument("--max-seconds", type=float, default=None, help="stop (and checkpoint) after this wall time")
    p.add_argument("--ckpt-every-s", type=float, default=300.0, help="seconds between checkpoints")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("configuration (overrides the preset)")
    for name, typ in [("data", str), ("data_split", str), ("arch", str), ("arch_kwargs", str), ("path", str),
                      ("prediction", str), ("noise_dist", str), ("weighting", str), ("sigma_data", float),
                      ("label_dropout", float), ("batch_size", int), ("lr", float), ("weight_decay", float),
                      ("warmup", int), ("steps", int), ("ema_decay", float), ("seed", int), ("threads", int)]:
        g.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, default=None)
    g.add_argument("--conditional", dest="conditional", action="store_const", const=True, default=None)
    p.set_defaults(func=cmd_train, argv=None)


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - thin wrapper
    from ..cli import build_parser

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    return int(args.func(args) or 0)
