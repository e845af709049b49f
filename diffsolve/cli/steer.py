"""``diffsolve steer`` (steer a model toward a reward, write the picture, print the compute and
reward numbers) and ``diffsolve steer-bench`` (the steering benchmarks).

    diffsolve steer --model mnist --reward class:7 --method fk --particles 8 --nfe 20 --num 64 --out steer.png
    diffsolve steer --model gmm-2d --reward linear:2,0 --method tds --particles 8 --num 500 --out tilt.png
    diffsolve steer-bench exact --out bench/results/steer-exact
"""

from __future__ import annotations

import argparse
import os
import shlex
import time

import torch

from ..bench.steer_exact import DEFAULT_METHODS, PARTICLES, PROBLEMS, run_steer_exact
from ..bench.steer_mnist import run_steer_mnist, steer_mnist_report
from ..bench.steer_report import steer_exact_report
from ..io import atomic_save_tensor
from ..plots import save_samples
from ..steer import METHODS, steer
from ..models.gmm import GaussianMixture
from ..rewards import Linear
from ..steer.base import REWARD_NAMES, named_reward
from .args import (IMAGE_EXTENSIONS, UsageError, add_quiet, float_range, json_object, load_continuous_model, model_name,
                   name_in, nfe_budget, nonneg_int, output_file, positive_int)
from .sample import quality_lines

__all__ = ["add_parsers", "cmd_steer", "cmd_steer_bench"]

method_name = name_in("steering method", sorted(METHODS))
problem_name = name_in("steering problem", PROBLEMS)
lam_arg = float_range("a number >= 0", 0.0)


def cmd_steer(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    model = load_continuous_model(args.model)
    k = int(getattr(model, "num_classes", 0) or 0)
    cond = {}
    if k:
        null = getattr(model, "null_label", k)
        if args.label is not None and not 0 <= args.label < k:
            raise UsageError(f"argument --label: {args.label} is out of range; model {args.model!r} has classes "
                             f"0..{k - 1} (omit --label for the unconditional model)")
        cond = {"labels": torch.full((args.num,), null if args.label is None else args.label)}
    elif args.label is not None:
        raise UsageError(f"argument --label: model {args.model!r} takes no labels")
    seeds = list(range(args.seed, args.seed + args.num))
    try:
        reward = named_reward(args.reward, model)
    except ValueError as e:
        raise UsageError(f"argument --reward: {e}") from None
    t0 = time.perf_counter()
    try:
        res = steer(model, reward, args.method, num=args.num, particles=args.particles, nfe=args.nfe,
                    lam=args.lam, seeds=seeds, cond=cond, progress=not args.quiet, **args.options)
    except (ValueError, TypeError) as e:
        raise UsageError(str(e)) from None
    wall = time.perf_counter() - t0
    x = res.samples.float()
    if args.out:
        save_samples(x, args.out, title=f"{args.model}: {args.method} toward {args.reward}, {res.nfe} calls/sample")
    if args.save_tensor:
        atomic_save_tensor(x, args.save_tensor)
    r = res.info["reward"]
    print(f"{args.num} sample{'s' if args.num != 1 else ''} from {args.model} steered toward {args.reward} with "
          f"{args.method} ({args.particles} particles, base {args.nfe} NFE, lam {args.lam:g}): {res.nfe} network calls "
          f"per sample ({res.info['vjp']} of them VJPs), {res.nfe * args.num} in all, {wall:.1f} s"
          + (f"; wrote {os.path.abspath(args.out)}" if args.out else ""))
    print(f"reward: mean {float(r.mean()):.4g}, min {float(r.min()):.4g}, max {float(r.max()):.4g} "
          f"({res.info.get('reward_calls', 0)} reward evaluations)")
    if "ess" in res.info and res.info["ess"]:
        print(f"particles: mean ESS {sum(res.info['ess']) / len(res.info['ess']):.2f} of {args.particles}, "
              f"{res.info.get('resampled', 0)} population resamplings")
    if args.metrics:
        if isinstance(model, GaussianMixture) and isinstance(reward, Linear):  # the exact tilted target
            tilt, _ = reward.tilt(model, args.lam)
            print(f"against the exact tilted target p(x) exp({args.lam:g} r(x)) / Z:")
            lines = quality_lines(tilt, x.double(), None)[1:]
        else:
            target = torch.full((args.num,), int(args.reward.split(":")[1])) if args.reward.startswith("class:") else None
            lines = quality_lines(model, x, target)
        for line in lines:
            print(line)
    return 0


def cmd_steer_bench(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    t0 = time.time()
    command = shlex.join(["diffsolve", *args.argv])
    args.out = args.out or f"bench/results/steer-{args.kind}"
    if args.kind == "mnist":
        entries = run_steer_mnist(args.out + ".json", nfe=args.nfe, per_class=args.per_class,
                                  grid_dir=os.path.dirname(os.path.abspath(args.out)), log=None if args.quiet else print)
        md = steer_mnist_report(entries, args.out, command)
        print(f"wrote {os.path.abspath(md)}")
        return 0
    rows = run_steer_exact(args.out + ".csv", problems=tuple(args.problems), methods=tuple(args.methods),
                           particles=tuple(args.particles), num=args.num, progress=not args.quiet)
    md, png = steer_exact_report(rows, args.out, command,
                                 wall=f"Wall time of the last (resumed) run: {time.time() - t0:.0f} s.")
    print(f"wrote {os.path.abspath(md)} and {os.path.abspath(png)}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("steer", help="steer a model toward a reward (FK steering, TDS, best-of-N, searches)")
    p.add_argument("--model", default="mnist", type=model_name, help="a shipped model, an exact mixture or a checkpoint")
    p.add_argument("--reward", required=True, help=f"a built-in reward: {', '.join(REWARD_NAMES)} (class:N uses the "
                                                   "shipped steering classifier, never the metric network)")
    p.add_argument("--method", default="fk", type=method_name, help=f"one of {', '.join(sorted(METHODS))}")
    p.add_argument("--particles", type=positive_int, default=8, help="particles (or candidates) per sample")
    p.add_argument("--nfe", type=nfe_budget, default=20, help="the base sampler's network calls per trajectory")
    p.add_argument("--lam", type=lam_arg, default=1.0, help="the tilt: p(x) exp(lam r(x))")
    p.add_argument("--num", type=positive_int, default=64, help="samples to return")
    p.add_argument("--seed", type=nonneg_int, default=0, help="first per-sample seed")
    p.add_argument("--label", type=nonneg_int, default=None,
                   help="condition a class-conditional model on this label (default: its null label, unconditional)")
    p.add_argument("--options", type=json_object, default={}, help='method options as JSON, e.g. \'{"potential": "max"}\'')
    p.add_argument("--out", default="steer.png", type=output_file(IMAGE_EXTENSIONS, allow_empty=True),
                   help="picture to write; '' writes none")
    p.add_argument("--save-tensor", default=None, type=output_file((".pt", ".pth")), help="also save the samples (.pt)")
    p.add_argument("--no-metrics", dest="metrics", action="store_false", help="do not print the quality numbers")
    p.add_argument("--threads", type=positive_int, default=2, help="torch threads")
    add_quiet(p, "no progress bar")
    p.set_defaults(func=cmd_steer)

    p = sub.add_parser("steer-bench", help="the steering benchmark on exact tilted targets: resumable CSV, "
                                           "Markdown, plots")
    p.add_argument("kind", choices=("exact", "mnist"),
                   help="exact: mixtures with closed-form tilted targets; mnist: the unconditional MNIST model "
                        "steered toward each class, judged by the metric network")
    p.add_argument("--problems", nargs="+", type=problem_name, default=list(PROBLEMS))
    p.add_argument("--methods", nargs="+", type=method_name, default=list(DEFAULT_METHODS))
    p.add_argument("--particles", nargs="+", type=positive_int, default=list(PARTICLES))
    p.add_argument("--num", type=positive_int, default=500, help="samples per cell")
    p.add_argument("--per-class", type=positive_int, default=10, help="mnist: samples per class")
    p.add_argument("--nfe", type=nfe_budget, default=20, help="mnist: the base sampler's NFE")
    p.add_argument("--out", default=None, help="output prefix (default bench/results/steer-KIND): PREFIX.csv/.json, "
                                               ".md, .png")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads")
    add_quiet(p, "no progress bar")
    p.set_defaults(func=cmd_steer_bench)
