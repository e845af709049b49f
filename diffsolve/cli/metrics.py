"""``diffsolve metrics DIR``: the quality numbers of a sharded run (``diffsolve sample --out-dir
DIR``), streamed over its shards: the same lines ``diffsolve sample`` prints for the same samples
held in memory (docs/sampling-at-scale.md)."""

from __future__ import annotations

import argparse
import json
import os

from .. import data
from .args import UsageError
from .sample import exact_lines, image_lines

__all__ = ["add_parser", "cmd_metrics"]


def _run_dir(text: str) -> str:
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a directory")
    return text


def cmd_metrics(args: argparse.Namespace) -> int:
    from ..shards import shard_quality
    from ..shards import MANIFEST, read_manifest

    if not os.path.isfile(os.path.join(args.dir, MANIFEST)):
        raise UsageError(f"argument DIR: {args.dir} has no {MANIFEST}; not a directory written by "
                         "diffsolve sample --out-dir")
    run = read_manifest(args.dir)
    why = data.mnist_missing() if args.knn else "--no-knn"
    kind, q = shard_quality(args.dir, knn=why is None)
    if args.json:
        print(json.dumps({"kind": kind, **q}, sort_keys=True))
        return 0
    print(f"{run.num} sample{'s' if run.num != 1 else ''} from {run.model} with {run.solver} in "
          f"{len(run.shards())} shard{'s' if len(run.shards()) != 1 else ''} ({os.path.abspath(args.dir)})")
    if kind == "exact":
        lines = exact_lines(q)
    elif kind == "mnist":
        lines = image_lines(q, why)
    else:
        lines = [f"no quality numbers for model {run.model!r} (exact mixtures and 28x28 grey images have them)"]
    for line in lines:
        print(line)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("metrics", help="quality numbers of a sharded run (diffsolve sample --out-dir), shard by shard")
    p.add_argument("dir", type=_run_dir, metavar="DIR", help="the --out-dir of a diffsolve sample run")
    p.add_argument("--no-knn", dest="knn", action="store_false",
                   help="skip k-NN precision/recall (they keep every sample's conv features and compare all pairs)")
    p.add_argument("--json", action="store_true", help="print the numbers as one JSON object, at full precision")
    p.set_defaults(func=cmd_metrics)
