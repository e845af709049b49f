"""``diffsolve train-verifier``: train the steering verifier (the second MNIST classifier, whose
input gradient steers samples toward a class), resumably.

    diffsolve train-verifier --out runs/verifier --export

Kill it at any time; the same command resumes from ``OUT/state.pt``. ``--export`` copies the
finished network to the shipped weights (``diffsolve/models/weights/mnist-verifier.*``).
"""

from __future__ import annotations

import argparse
import shlex

from ..train.verifier import VerifierConfig, export_verifier, train_verifier
from .args import add_quiet, positive_float, positive_int, seed_arg

__all__ = ["add_parser", "cmd_train_verifier"]


def cmd_train_verifier(args: argparse.Namespace) -> int:
    over = {k: getattr(args, k) for k in ("steps", "seed", "threads") if getattr(args, k) is not None}
    cfg = VerifierConfig(**over)
    command = "diffsolve " + " ".join(shlex.quote(a) for a in args.argv)
    res = train_verifier(cfg, args.out, resume=not args.restart, progress=not args.quiet,
                         max_seconds=args.max_seconds, command=command)
    if res["accuracy"] is None:
        print(f"stopped at step {res['step']} of {cfg.steps} ({res['seconds']:.0f} s); "
              f"the same command resumes from {args.out}/state.pt")
        if args.export:
            print("not exported: the run has not finished")
        return 0
    acc = res["accuracy"]
    print(f"trained the verifier: {res['step']} steps, {res['seconds']:.0f} s, {res['params']} parameters, "
          f"test accuracy {acc['test']:.4f} (first 1000: {acc['test_first_1000']:.4f}); model {args.out}/verifier.json")
    if args.export:
        print(f"exported {export_verifier(args.out)}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-verifier", help="train the MNIST steering verifier (a second classifier)")
    p.add_argument("--out", required=True, help="run directory; resumes if it holds state.pt")
    p.add_argument("--steps", type=positive_int, default=None, help=f"training steps (default {VerifierConfig.steps})")
    p.add_argument("--seed", type=seed_arg, default=None, help=f"seed (default {VerifierConfig.seed})")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads (default 1)")
    p.add_argument("--restart", action="store_true", help="ignore an existing state.pt")
    p.add_argument("--export", action="store_true",
                   help="copy the finished network to the shipped weights (mnist-verifier.*)")
    p.add_argument("--max-seconds", type=positive_float, default=None, help="stop (and checkpoint) after this wall time")
    add_quiet(p, "no progress bar")
    p.set_defaults(func=cmd_train_verifier)
