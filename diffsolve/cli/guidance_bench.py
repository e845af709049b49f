"""``diffsolve guidance-bench mnist``: the MNIST guidance benchmark
(:mod:`diffsolve.bench.guidance_mnist`): CFG, Adaptive Guidance, classifier guidance and
universal guidance toward each class, a resumable JSON and its Markdown report."""

from __future__ import annotations

import argparse
import os
import shlex

import torch

from ..bench.guidance_mnist import guidance_mnist_report, run_guidance_mnist
from .args import add_quiet, int_range, nfe_budget, positive_int

__all__ = ["add_parser", "cmd_guidance_bench"]


def cmd_guidance_bench(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    out = args.out or f"bench/results/guidance-{args.kind}"
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise OSError(f"argument --out: the directory {parent!r} does not exist")
    entries = run_guidance_mnist(out + ".json", nfe=args.nfe, per_class=args.per_class,
                                 log=None if args.quiet else print)
    md = guidance_mnist_report(entries, out, shlex.join(["diffsolve", *args.argv]))
    print(f"wrote {os.path.abspath(md)}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("guidance-bench", help="the guidance benchmark (CFG, adaptive, classifier, universal "
                                              "guidance): resumable JSON and Markdown")
    p.add_argument("kind", choices=("mnist",),
                   help="mnist: every guidance toward each class 0..9, judged by the metric network")
    p.add_argument("--per-class", type=int_range(2), default=10,
                   help="samples per class (>= 2: diversity compares samples within a class)")
    p.add_argument("--nfe", type=nfe_budget, default=20, help="the sampler's NFE (dpm++2m)")
    p.add_argument("--out", default=None, help="output prefix (default bench/results/guidance-KIND): PREFIX.json, .md")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads")
    add_quiet(p, "no per-configuration lines")
    p.set_defaults(func=cmd_guidance_bench)
