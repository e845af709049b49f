"""``diffsolve text-bench``: the masked-diffusion samplers on the exact chain and the trained
Shakespeare model (resumable; writes PREFIX.csv per part, PREFIX.md and plots).

    diffsolve text-bench --part exact --out bench/results/text
    diffsolve text-bench --part model --out bench/results/text
    diffsolve text-bench --report --out bench/results/text
"""

from __future__ import annotations

import argparse
import os
import shlex

from ..bench.store import Table
from ..bench.text import COLUMNS, KEY, PARTS, cells, run_text_bench
from ..bench.text_report import write_text_report
from .args import add_quiet, name_in

__all__ = ["add_parser", "cmd_text_bench"]


def cmd_text_bench(args: argparse.Namespace) -> int:
    command = "diffsolve " + " ".join(shlex.quote(a) for a in args.argv)
    if not args.report:
        for part in args.part:
            run_text_bench(part, f"{args.out}-{part}", labels=args.labels, progress=not args.quiet)
    parts = {p: Table(f"{args.out}-{p}.csv", COLUMNS, KEY).rows() for p in PARTS if os.path.exists(f"{args.out}-{p}.csv")}
    md = write_text_report(parts, args.out, [command])
    print(f"wrote {md}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("text-bench", help="benchmark the masked-diffusion (text) samplers")
    p.add_argument("--part", nargs="+", default=list(PARTS), type=name_in("part", PARTS), help=", ".join(PARTS))
    p.add_argument("--out", required=True, help="output prefix: PREFIX-PART.csv, PREFIX.md, PREFIX-PART.png")
    p.add_argument("--labels", nargs="+", default=None,
                   type=name_in("label", sorted({c["label"] for part in PARTS for c in cells(part)})),
                   help="only these sampler configurations")
    p.add_argument("--report", action="store_true", help="only (re)write the report from the CSVs")
    add_quiet(p, "no per-cell lines")
    p.set_defaults(func=cmd_text_bench)
