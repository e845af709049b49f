"""``diffsolve bench``: run (or resume) a sweep and write PREFIX.csv, PREFIX.md and PREFIX.png.

    diffsolve bench --models gmm-2d --nfes 4 8 --seeds 0 --batch 16 --out /tmp/b/tiny
    diffsolve bench --from-csv bench/results/gmm-2d.csv bench/results/gmm-64.csv --out bench/results/exact
    diffsolve bench --overhead --out bench/results/overhead
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time


def cmd_bench(args) -> int:
    import torch

    from .report import write_report

    torch.set_num_threads(args.threads)
    prefix = args.out
    csvs = list(args.from_csv or [])
    if args.overhead:
        from ..io import atomic_write_json, atomic_write_text
        from .overhead import format_overhead, measure_overhead

        rows = measure_overhead(batch_sizes=tuple(args.overhead_batch), steps=args.overhead_steps,
                                repeats=args.overhead_repeats)
        atomic_write_json(prefix + ".json", rows)
        atomic_write_text(prefix + ".md", format_overhead(rows) + "\n")
        print(format_overhead(rows))
        return 0
    if not csvs:
        from .sweep import DEFAULT_SCHEDULES, SweepSpec, default_methods, run_sweep

        methods = list(args.methods or [])
        if not methods:
            methods = default_methods(schedules=tuple(args.schedules or DEFAULT_SCHEDULES), peers=not args.no_peers,
                                      solvers=args.solvers)
        kw = {}
        if args.rtols is not None:
            kw["rtols"] = tuple(args.rtols)
        spec = SweepSpec(models=tuple(args.models), methods=tuple(methods), nfes=tuple(args.nfes),
                         seeds=tuple(args.seeds), batch=args.batch, path=args.path, prediction=args.prediction,
                         ref_steps=args.ref_steps, **kw)
        csv_path = prefix + ".csv"
        t0 = time.time()

        def progress(row, done, total):
            if not args.quiet and (done % 25 == 0 or done == total or row["status"] not in ("ok", "skipped")):
                extra = f" [{row['status']}: {row['message'][:80]}]" if row["status"] not in ("ok", "skipped") else ""
                print(f"{done}/{total} {time.time() - t0:7.0f}s  {row['model']} {row['method']} "
                      f"budget={row['budget']}{extra}", flush=True)

        run_sweep(spec, csv_path, ray=args.ray, ray_cpus=args.ray_cpus, on_row=progress,
                  log=None if args.quiet else print)
        csvs = [csv_path]
    md, png = write_report(csvs, prefix, command=shlex.join(["diffsolve", "bench"] + sys.argv[2:])
                           if sys.argv[1:2] == ["bench"] else None)
    print(f"wrote {os.path.abspath(md)} and {os.path.abspath(png)}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    from .sweep import DEFAULT_NFES

    p = sub.add_parser("bench", help="benchmark solvers and peers (diffusers, k-diffusion, torchdiffeq): "
                                     "resumable sweep -> CSV, Markdown table, log-log plot")
    p.add_argument("--models", nargs="+", default=["gmm-2d", "gmm-64", "gmm-3072"],
                   help="exact mixtures (gmm-2d, gmm-64, gmm-3072) or shipped trained models")
    p.add_argument("--methods", nargs="+", default=None,
                   help="method keys (diffsolve:SOLVER[SCHEDULE], diffusers:..., k-diffusion:..., torchdiffeq:...); "
                        "default: every registered solver on --schedules, and every peer")
    p.add_argument("--solvers", nargs="+", default=None, help="restrict our solvers (default: all registered)")
    p.add_argument("--schedules", nargs="+", default=None, help="schedules for our solvers")
    p.add_argument("--no-peers", action="store_true", help="run our solvers only")
    p.add_argument("--nfes", nargs="+", type=int, default=list(DEFAULT_NFES))
    p.add_argument("--rtols", nargs="+", type=float, default=None, help="tolerances of adaptive methods")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--batch", type=int, default=64, help="samples per seed")
    p.add_argument("--path", default="ddpm-linear", help="path of the exact models' network")
    p.add_argument("--prediction", default="eps", help="prediction type of the exact models' network")
    p.add_argument("--ref-steps", type=int, default=300, help="RK4 steps of the reference solution")
    p.add_argument("--out", default="bench/results/bench", help="output prefix: PREFIX.csv, PREFIX.md, PREFIX.png")
    p.add_argument("--from-csv", nargs="+", default=None, help="only write the report from existing sweep CSVs")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="fan the cells out over Ray: 'local' starts a cluster here, else the address to join")
    p.add_argument("--ray-cpus", type=int, default=None, help="CPUs of a local Ray cluster")
    p.add_argument("--threads", type=int, default=1, help="torch threads of this process")
    p.add_argument("--overhead", action="store_true",
                   help="measure loop overhead per step against diffusers instead (PREFIX.md/.json)")
    p.add_argument("--overhead-batch", nargs="+", type=int, default=[1, 64])
    p.add_argument("--overhead-steps", type=int, default=20)
    p.add_argument("--overhead-repeats", type=int, default=50)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_bench)
