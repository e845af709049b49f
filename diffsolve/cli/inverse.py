"""``diffsolve inverse`` (solve one MNIST inverse problem, write the figure, print the metrics) and
``diffsolve inverse-bench`` (the inverse-problem benchmarks: resumable CSV, Markdown, plots).

    diffsolve inverse --model mnist --task inpaint-box --method diffpir --nfe 20 --num 16 --out inpaint.png
    diffsolve inverse-bench exact --out bench/results/inverse-exact
    diffsolve inverse-bench mnist --out bench/results/inverse-mnist
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import time

import torch

from ..bench.inverse_exact import DEFAULT_NFES, ORACLES, ExactSpec, run_exact
from ..bench.inverse_mnist import (GROUPS, NULL_LABEL, PEERS, SIGMA01, VALUE_RANGE, MnistSpec, measurement_image,
                                   posterior_figure, reconstruction_metrics, run_mnist, solve_task)
from ..bench.inverse_problems import DEFAULT_EXACT_PROBLEMS, MNIST_TASKS, check_exact_problem, mnist_operator
from ..bench.inverse_report import exact_report, mnist_report
from ..inverse import DEFAULT_METHOD, METHODS, sigma_in_model_units
from ..solvers import NFEError
from .args import (IMAGE_EXTENSIONS, UsageError, add_quiet, float_range, int_range, library_check, name_in,
                   nfe_budget, output_file, positive_int)

__all__ = ["add_parsers", "cmd_inverse", "cmd_inverse_bench"]

#: the models ``diffsolve inverse`` solves tasks for (28x28 grey images in [-1, 1])
INVERSE_MODELS = ("mnist",)
_MAX_NUM = 10000
method_name = name_in("inverse method", sorted(METHODS))
sigma01 = float_range("a number in [0, 1) (pixel units: [0, 1])", 0.0, 1.0, hi_open=True)


def cmd_inverse(args: argparse.Namespace) -> int:
    from ..data import mnist
    from ..models import load_model

    torch.set_num_threads(args.threads)
    prior = load_model(args.model)
    k = int(getattr(prior, "num_classes", 0) or 0)
    if args.label is not None and not 0 <= args.label < k:
        raise UsageError(f"argument --label: {args.label} is out of range; model {args.model!r} has classes 0..{k - 1} "
                         "(omit --label for the unconditional prior)")
    x, labels = mnist("test")
    truth, labels = x[args.first: args.first + args.num].to(torch.float64), labels[args.first: args.first + args.num]
    if truth.shape[0] < args.num:
        raise UsageError(f"argument --first: {args.first} + --num {args.num} is past the {x.shape[0]} MNIST test images")
    op = mnist_operator(args.task)
    sigma_y = sigma_in_model_units(args.sigma_y, VALUE_RANGE)
    seeds = list(range(args.seed, args.seed + args.num))
    y = op.measure(truth, sigma_y, seeds=seeds)
    cond_label = NULL_LABEL if args.label is None else args.label
    cond = {"labels": torch.full((args.num,), cond_label)}
    t0 = time.perf_counter()
    try:
        samples, nfe, vjp = solve_task(prior, op, y, sigma_y, args.method, args.nfe, seeds, cond,
                                       progress=not args.quiet)
    except NFEError as e:
        raise UsageError(f"argument --nfe: {' '.join(str(e).split())}") from None
    wall = time.perf_counter() - t0
    per = args.samples
    if per > 1:
        rows = min(args.num, 8)
        idx = torch.arange(rows).repeat_interleave(per)
        extra, _, _ = solve_task(prior, op, y[idx], sigma_y, args.method, args.nfe,
                                 [args.seed + 1_000_000 + i for i in range(rows * per)],
                                 {"labels": torch.full((rows * per,), cond_label)})
        fig_samples = extra.reshape(rows, per, *extra.shape[1:])
    else:
        rows = min(args.num, 16)
        fig_samples = samples[:rows, None]
    cond_words = "unconditional" if args.label is None else f"label {args.label}"
    if args.out:
        posterior_figure(truth[:rows], measurement_image(op, y[:rows]), fig_samples, args.out,
                         f"{args.model} {args.task}: {args.method}, {nfe} NFE, {cond_words}, "
                         f"sigma_y = {args.sigma_y:g} ([0, 1] units)")
    m = reconstruction_metrics(samples, truth, labels)
    print(f"{args.num} reconstruction{'s' if args.num != 1 else ''} of {args.task} with {args.method} ({cond_words}): "
          f"{nfe} NFE ({vjp} VJPs), {wall:.1f}s" + (f"; wrote {os.path.abspath(args.out)}" if args.out else ""))
    print(f"  PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.3f} ([0, 1] units)")
    print(f"  true digit recognised: shipped CNN {100 * m['acc_shipped']:.1f}%, "
          f"independent MLP {100 * m['acc_independent']:.1f}%")
    if "fd" in m:
        print(f"  Frechet distance {m['fd']:.2f} (shipped features; biased upward at small n)")
    return 0


def _commands(md_path: str, command: str) -> str:
    """The commands that filled the CSV: those the previous report lists, then this one (once)."""
    prev: list[str] = []
    if os.path.exists(md_path):
        with open(md_path) as f:
            m = re.search(r"Produced by:\n\n((?:    .*\n)+)", f.read())
        prev = [line[4:] for line in m.group(1).splitlines()] if m else []
    return "\n    ".join(dict.fromkeys([*prev, command]))


def _wall(rows: list[dict[str, str]], seconds: float) -> str:
    cells = sum(float(r["seconds"] or 0) for r in rows)
    return (f"Compute time of the cells (the CSV's `seconds`, summed): {cells:.0f} s; wall time of this invocation: "
            f"{seconds:.0f} s (a resumed run computes only the missing cells).")


def _exact(args: argparse.Namespace, command: str) -> None:
    try:
        spec = ExactSpec(problems=tuple(args.problems), methods=tuple(args.methods) if args.methods else None,
                         nfes=tuple(args.nfes), num=args.num, oracles=tuple(args.oracles), max_cost=args.max_cost)
    except ValueError as e:
        raise UsageError(str(e)) from None
    t0 = time.time()
    rows = run_exact(args.out + ".csv", spec, progress=not args.quiet)
    md, png = exact_report(rows, args.out, _commands(args.out + ".md", command), wall=_wall(rows, time.time() - t0))
    print(f"wrote {os.path.abspath(md)} and {os.path.abspath(png)}")


def _mnist(args: argparse.Namespace, command: str) -> None:
    try:
        spec = MnistSpec(tasks=tuple(args.tasks), groups=tuple(args.groups), methods=tuple(args.methods) if args.methods else None,
                         nfes=tuple(args.nfes), peers=tuple(args.peers), peer_nfes=tuple(args.peer_nfes),
                         num=args.num, max_calls=args.max_calls,
                         cond_methods=tuple(args.cond_methods) if args.cond_methods else None)
    except ValueError as e:
        raise UsageError(str(e)) from None
    t0 = time.time()
    rows = run_mnist(args.out + ".csv", spec, figures=args.out, progress=not args.quiet)
    figs = [os.path.basename(f"{args.out}-{t}.png") for t in spec.tasks if os.path.exists(f"{args.out}-{t}.png")]
    md = mnist_report(rows, args.out, _commands(args.out + ".md", command), figures=figs,
                      wall=_wall(rows, time.time() - t0))
    print(f"wrote {os.path.abspath(md)}")


def cmd_inverse_bench(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    command = shlex.join(["diffsolve", *args.argv])
    args.out = args.out or f"bench/results/inverse-{args.suite}"
    args.nfes = args.nfes or (list(DEFAULT_NFES) if args.suite == "exact" else [20, 100])
    args.num = args.num or (500 if args.suite == "exact" else 32)
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        raise UsageError(f"argument --out: directory {os.path.dirname(os.path.abspath(args.out))} does not exist")
    (_exact if args.suite == "exact" else _mnist)(args, command)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inverse", help="solve an MNIST inverse problem with a posterior sampler; write the figure "
                                       "(truth | measurement | samples | mean | std) and print the metrics")
    p.add_argument("--model", default="mnist", type=name_in("model", INVERSE_MODELS),
                   help="the prior (the shipped MNIST EDM model)")
    p.add_argument("--task", default="inpaint-box", type=name_in("task", MNIST_TASKS))
    p.add_argument("--method", default=DEFAULT_METHOD, type=name_in("method", (*sorted(METHODS), *PEERS)),
                   help=f"a posterior sampler of diffsolve.inverse.methods() (default {DEFAULT_METHOD}: "
                        "one measured choice per task's operator family, "
                        "diffsolve.inverse.methods.auto.DEFAULT_METHODS), or "
                        f"{', '.join(PEERS)} (the peer, needs deepinv)")
    p.add_argument("--nfe", type=nfe_budget, default=20, help="network calls per sample (a VJP counts as one)")
    p.add_argument("--num", type=int_range(1, _MAX_NUM, " test images"), default=16,
                   help="how many MNIST test images to reconstruct")
    p.add_argument("--first", type=int_range(0), default=0, help="index of the first MNIST test image")
    p.add_argument("--sigma-y", type=sigma01, default=SIGMA01,
                   help=f"measurement noise std in [0, 1] PIXEL units (default {SIGMA01}; the model's [-1, 1] units "
                        "are twice that)")
    p.add_argument("--label", type=int_range(0), default=None,
                   help="condition the prior on this digit (default: unconditional, the null label)")
    p.add_argument("--samples", type=int_range(1, 16), default=4,
                   help="posterior samples per measurement in the figure (first 8 measurements; 1: one each)")
    p.add_argument("--seed", type=int_range(0, 2 ** 62), default=0, help="first per-sample seed")
    p.add_argument("--out", default="inverse.png", type=output_file(IMAGE_EXTENSIONS, allow_empty=True),
                   help="figure to write; '' writes none")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads")
    add_quiet(p, "no progress bar")
    p.set_defaults(func=cmd_inverse)

    b = sub.add_parser("inverse-bench", help="the inverse-problem benchmarks: exact mixtures or MNIST "
                                             "(resumable CSV, Markdown report, plots)")
    b.add_argument("suite", type=name_in("suite", ("exact", "mnist")), help="exact or mnist")
    b.add_argument("--out", default=None, help="output prefix (default bench/results/inverse-SUITE)")
    b.add_argument("--methods", nargs="+", type=method_name, default=None,
                   help="our methods (default: every registered one)")
    b.add_argument("--nfes", nargs="+", type=nfe_budget, default=None,
                   help=f"budgets (default exact: {' '.join(map(str, DEFAULT_NFES))}; mnist: 20 100)")
    b.add_argument("--num", type=positive_int, default=None,
                   help="samples per cell (exact, default 500) / MNIST test images (mnist, default 32)")
    b.add_argument("--problems", nargs="+", type=library_check("exact problem", check_exact_problem),
                   default=list(DEFAULT_EXACT_PROBLEMS), help="exact: problems (grid-D-yM for MCGdiff's grid)")
    b.add_argument("--oracles", nargs="+", default=list(ORACLES), type=name_in("oracle", ORACLES),
                   help="exact: oracle rows (our ODE solvers on the exact posterior denoiser)")
    b.add_argument("--max-cost", type=float_range("a positive number", 0.0, lo_open=True), default=2e8,
                   help="exact: skip cells above NFE x samples x dim x components")
    b.add_argument("--tasks", nargs="+", type=name_in("task", MNIST_TASKS), default=list(MNIST_TASKS))
    b.add_argument("--peers", nargs="*", type=name_in("peer", PEERS), default=list(PEERS),
                   help="mnist: deepinv's samplers (through the peer adapter); none: give the flag alone")
    b.add_argument("--groups", nargs="+", type=name_in("group", GROUPS), default=list(GROUPS),
                   help="mnist: row groups (uncond: the null label; cond: the true labels)")
    b.add_argument("--peer-nfes", nargs="+", type=int_range(0), default=[0, 100],
                   help="mnist: peer budgets (0: deepinv's defaults)")
    b.add_argument("--cond-methods", nargs="+", type=method_name, default=None,
                   help="mnist: our methods in the conditional group (default: all)")
    b.add_argument("--max-calls", type=positive_int, default=6400,
                   help="mnist: skip cells above NFE x images network calls")
    b.add_argument("--threads", type=positive_int, default=1, help="torch threads")
    add_quiet(b, "no progress bar")
    b.set_defaults(func=cmd_inverse_bench)
