"""``diffsolve generate``: text from a masked diffusion model, and ``diffsolve samplers`` (the
discrete samplers' table).

    diffsolve generate --model shakespeare --nfe 64 --length 256 --num 8 --prompt "ROMEO:"
    diffsolve generate --model shakespeare --sampler threshold --options '{"tau": 0.8}' --json out.json

Without ``--sampler`` the recommended sampler is used (``diffsolve.text.RECOMMENDED``).
"""

from __future__ import annotations

import argparse
import sys

from ..discrete.samplers import get_sampler, list_samplers
from ..discrete.text import RECOMMENDED, generate
from ..io import atomic_write_json
from .args import add_quiet, json_object, library_check, nfe_arg, output_file, positive_int, sample_count, seed_arg

__all__ = ["add_parsers", "cmd_generate", "cmd_samplers"]


def cmd_generate(args: argparse.Namespace) -> int:
    from ..discrete.models import load_text_model

    model = load_text_model(args.model)
    seeds = list(range(args.seed, args.seed + args.num))
    res = generate(model, num=args.num, length=args.length, sampler=args.sampler, nfe=args.nfe, prompt=args.prompt,
                   seeds=seeds, cache=not args.no_cache, progress=not args.quiet, **(args.options or {}))
    for k, text in enumerate(res.texts):
        print(f"--- sample {k} (seed {seeds[k]}) ---")
        print(text)
    info = res.info
    print(f"sampler {info['sampler']} {info['options']}: {res.nfe} network calls, "
          f"{info['tokens_per_call']:.2f} tokens per call per sample, {info['seconds']:.1f} s", file=sys.stderr)
    if args.json:
        atomic_write_json(args.json, res.texts)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def cmd_samplers(args: argparse.Namespace) -> int:
    rows = list_samplers()
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        alias = f" (aliases {', '.join(r['aliases'])})" if r["aliases"] else ""
        print(f"{r['name'].ljust(width)}  {'exact   ' if r['exact'] else 'approx. '}{r['budget']:8s}  "
              f"{r['doc']}{alias}  [{r['paper']}]")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate text with a masked diffusion model")
    p.add_argument("--model", default="shakespeare", help="a shipped text model (shakespeare) or a run directory")
    p.add_argument("--sampler", default=None, type=library_check("sampler", lambda v: get_sampler(v) and v),
                   help=f"default: the recommended one ({RECOMMENDED['sampler']})")
    p.add_argument("--nfe", type=nfe_arg, default=64, help="network calls (a cap for adaptive decoders; "
                   "'none' for first-hitting's one per character)")
    p.add_argument("--length", type=positive_int, default=256, help="characters per sample (prompt included)")
    p.add_argument("--num", type=sample_count, default=8)
    p.add_argument("--prompt", default=None, help="text every sample starts with")
    p.add_argument("--seed", type=seed_arg, default=0, help="sample k gets seed SEED+k")
    p.add_argument("--options", type=json_object, default=None, help="sampler options as JSON, e.g. '{\"tau\": 0.8}'")
    p.add_argument("--no-cache", action="store_true", help="evaluate the model even when nothing changed")
    p.add_argument("--json", type=output_file([".json"]), default=None, help="write the list of texts here")
    add_quiet(p, "no progress bar")
    p.set_defaults(func=cmd_generate)
    q = sub.add_parser("samplers", help="list the discrete (text) samplers")
    q.set_defaults(func=cmd_samplers)
