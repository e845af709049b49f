"""The ``diffsolve`` command line.

    diffsolve solvers
    diffsolve sample --model gmm-2d --solver dpm++2m --nfe 8 --out samples.png

Each sub-command lives with the code it drives and registers itself through an
``add_parser(subparsers)`` function listed in ``_COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# module path -> function adding its sub-command(s)
_COMMANDS = [
    "diffsolve.cli_sample",
    "diffsolve.bench.cli",
    "diffsolve.train.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffsolve", description="Sample diffusion and flow models: fast, accurate, measured.")
    sub = parser.add_subparsers(dest="command", required=True)
    for mod in _COMMANDS:
        importlib.import_module(mod).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"diffsolve {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
