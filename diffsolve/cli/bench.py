"""``diffsolve bench``: run (or resume) a sweep and write PREFIX.csv, PREFIX.md and PREFIX.png.

    diffsolve bench --models gmm-2d --nfes 4 8 --seeds 0 --batch 16 --out /tmp/b/tiny
    diffsolve bench --from-csv bench/results/gmm-2d.csv bench/results/gmm-64.csv --out bench/results/exact
    diffsolve bench --overhead --out bench/results/overhead
    diffsolve bench --steer exact        (= diffsolve steer-bench exact, its defaults)
    diffsolve bench --guidance mnist     (= diffsolve guidance-bench mnist, its defaults)

Every flag is checked when parsed (unknown models, solvers, schedules, methods; budgets, seeds and
sizes that are not positive), so nothing runs on a spec that cannot run.
"""

from __future__ import annotations

import argparse
import os
import shlex
import time
from typing import Any

import torch

from ..bench.methods import default_methods
from ..bench.overhead import format_overhead, measure_overhead
from ..bench.ray_address import check_ray_address
from ..bench.report import write_report
from ..bench.run import run_sweep
from ..bench.spec import DEFAULT_MODELS, DEFAULT_NFES, DEFAULT_SCHEDULES, SpecError, SweepSpec
from ..io import atomic_write_json, atomic_write_text
from .args import (UsageError, add_quiet, existing_file, library_check, method_arg, model_name, nfe_budget, nonneg_int, path_name,
                   positive_float, positive_int, prediction_name, schedule_name, solver_name)

__all__ = ["add_parser", "cmd_bench"]


def _overhead(args: argparse.Namespace) -> int:
    rows = measure_overhead(batch_sizes=tuple(args.overhead_batch), steps=args.overhead_steps,
                            repeats=args.overhead_repeats)
    atomic_write_json(args.out + ".json", rows)
    atomic_write_text(args.out + ".md", format_overhead(rows) + "\n")
    print(format_overhead(rows))
    return 0


def _spec(args: argparse.Namespace) -> SweepSpec:
    methods = args.methods or default_methods(schedules=tuple(args.schedules or DEFAULT_SCHEDULES),
                                              peers=not args.no_peers, solvers=args.solvers)
    kw: dict[str, Any] = {} if args.rtols is None else {"rtols": tuple(args.rtols)}
    try:
        return SweepSpec(models=tuple(args.models), methods=tuple(methods), nfes=tuple(args.nfes),
                         seeds=tuple(args.seeds), batch=args.batch, path=args.path, prediction=args.prediction,
                         ref_steps=args.ref_steps, tune_budget=args.tune_budget, tune_batch=args.tune_batch,
                         plans_dir=args.out + "-plans", **kw)
    except SpecError as e:  # the flag of the field
        raise UsageError(f"argument --{e.field.replace('_', '-')}: {e}") from None


def _sweep(args: argparse.Namespace) -> str:
    spec = _spec(args)
    csv_path = args.out + ".csv"
    t0 = time.time()

    def progress(row: dict[str, Any], done: int, total: int) -> None:
        failed = row["status"] not in ("ok", "skipped")
        if not args.quiet and (done % 25 == 0 or done == total or failed):
            extra = f" [{row['status']}: {row['message'][:80]}]" if failed else ""
            print(f"{done}/{total} {time.time() - t0:7.0f}s  {row['model']} {row['method']} "
                  f"budget={row['budget']}{extra}", flush=True)

    run_sweep(spec, csv_path, ray=args.ray, ray_cpus=args.ray_cpus, on_row=progress,
              log=None if args.quiet else print)
    return csv_path


_DEFAULT_OUT = "bench/results/bench"


def _delegate(args: argparse.Namespace) -> int:
    """``--steer KIND`` / ``--guidance KIND``: the steering or guidance benchmark with the defaults
    of ``diffsolve steer-bench`` / ``guidance-bench`` (their own commands take every option)."""
    from . import guidance_bench, steer
    from ..bench.steer_exact import DEFAULT_METHODS, PARTICLES, PROBLEMS

    out = None if args.out == _DEFAULT_OUT else args.out
    common = dict(out=out, threads=args.threads, quiet=args.quiet, argv=args.argv, nfe=20, per_class=10)
    if args.steer:
        return steer.cmd_steer_bench(argparse.Namespace(kind=args.steer, problems=list(PROBLEMS),
                                                        methods=list(DEFAULT_METHODS), particles=list(PARTICLES),
                                                        num=500, **common))
    return guidance_bench.cmd_guidance_bench(argparse.Namespace(kind=args.guidance, **common))


def cmd_bench(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    if args.steer or args.guidance:
        return _delegate(args)
    if args.overhead:
        return _overhead(args)
    csvs = list(args.from_csv or []) or [_sweep(args)]
    md, png = write_report(csvs, args.out, command=shlex.join(["diffsolve", *args.argv]))
    print(f"wrote {os.path.abspath(md)} and {os.path.abspath(png)}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark solvers and peers (diffusers, k-diffusion, torchdiffeq): "
                                     "resumable sweep -> CSV, Markdown table, log-log plot")
    p.add_argument("--models", nargs="+", type=model_name, default=list(DEFAULT_MODELS),
                   help="exact mixtures (gmm-2d, gmm-64, gmm-3072) or shipped trained models")
    p.add_argument("--methods", nargs="+", type=method_arg, default=None,
                   help="method keys (diffsolve:SOLVER[SCHEDULE], diffusers:..., k-diffusion:..., torchdiffeq:...); "
                        "default: every registered solver on --schedules, and every peer")
    p.add_argument("--solvers", nargs="+", type=solver_name, default=None,
                   help="restrict our solvers (default: all registered)")
    p.add_argument("--schedules", nargs="+", type=schedule_name, default=None, help="schedules for our solvers")
    p.add_argument("--no-peers", action="store_true", help="run our solvers only")
    p.add_argument("--nfes", nargs="+", type=nfe_budget, default=list(DEFAULT_NFES))
    p.add_argument("--rtols", nargs="+", type=positive_float, default=None, help="tolerances of adaptive methods")
    p.add_argument("--seeds", nargs="+", type=nonneg_int, default=[0, 1])
    p.add_argument("--batch", type=positive_int, default=64, help="samples per seed")
    p.add_argument("--path", type=path_name, default="ddpm-linear", help="path of the exact models' network")
    p.add_argument("--prediction", type=prediction_name, default="eps",
                   help="prediction type of the exact models' network")
    p.add_argument("--ref-steps", type=positive_int, default=300, help="RK4 steps of the reference solution")
    p.add_argument("--out", default=_DEFAULT_OUT, help="output prefix: PREFIX.csv, PREFIX.md, PREFIX.png "
                   "(tuned rows keep their plans in PREFIX-plans/)")
    p.add_argument("--tune-budget", type=positive_int, default=6000,
                   help="network calls a tuned row's plan may cost (diffsolve.tune's budget; default 6000)")
    p.add_argument("--tune-batch", type=positive_int, default=128, help="tuning samples of a tuned row (default 128)")
    p.add_argument("--from-csv", nargs="+", type=existing_file, default=None,
                   help="only write the report from existing sweep CSVs")
    p.add_argument("--ray", default=None, metavar="ADDRESS", type=library_check("ray_address", check_ray_address),
                   help="fan the cells out over Ray: 'local' starts a cluster here, else the HOST:PORT to join "
                        "(checked at once: it must accept a connection)")
    p.add_argument("--ray-cpus", type=positive_int, default=None, help="CPUs of a local Ray cluster")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads of this process")
    p.add_argument("--steer", choices=("exact", "mnist"), default=None,
                   help="run the steering benchmark instead, with diffsolve steer-bench's defaults")
    p.add_argument("--guidance", choices=("mnist",), default=None,
                   help="run the guidance benchmark instead, with diffsolve guidance-bench's defaults")
    p.add_argument("--overhead", action="store_true",
                   help="measure loop overhead per step against diffusers instead (PREFIX.md/.json)")
    p.add_argument("--overhead-batch", nargs="+", type=positive_int, default=[1, 64])
    p.add_argument("--overhead-steps", type=positive_int, default=20)
    p.add_argument("--overhead-repeats", type=positive_int, default=50)
    add_quiet(p, "no progress lines")
    p.set_defaults(func=cmd_bench)
