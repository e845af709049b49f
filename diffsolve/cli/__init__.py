"""The ``diffsolve`` command line, the only place with argparse (the library never imports it).

    diffsolve solvers
    diffsolve sample --model gmm-2d --solver dpm++2m --nfe 8 --out samples.png
    diffsolve bench --models gmm-2d --nfes 4 8 --seeds 0 --batch 16 --out /tmp/b/tiny
    diffsolve train --preset digits --out runs/digits --export

One module per sub-command (:mod:`~diffsolve.cli.sample`, :mod:`~diffsolve.cli.bench`,
:mod:`~diffsolve.cli.train`), the argument types they share in :mod:`~diffsolve.cli.args`.
Every bad input is answered with one line on stderr and a non-zero exit, never a traceback
(warnings, too, are one line: ``diffsolve CMD: warning: ...``):

    >>> main(["sample", "--nfe", "0"])   # stderr: diffsolve sample: error: argument --nfe: '0' is ...
    2

Exit status: 0 success; 2 a refused input or a diffsolve error (``diffsolve CMD: error: ...``);
1 an unexpected exception (``DIFFSOLVE_TRACEBACK=1`` shows its traceback); 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from . import bench, generate, inverse, metrics, sample, steer, text_bench, train, train_text, train_verifier
from . import guidance_bench, tune
from .args import Parser, command_line

__all__ = ["main", "build_parser", "DIFFSOLVE_ERRORS"]

#: exceptions that carry a message for the user (exit status 2); any other is unexpected (1)
DIFFSOLVE_ERRORS = (ValueError, TypeError, OSError, ImportError, FloatingPointError, KeyError, RuntimeError)

_ADD_COMMANDS = (sample.add_parsers, bench.add_parser, train.add_parser, train_text.add_parser, inverse.add_parsers,
                 generate.add_parsers, text_bench.add_parser, metrics.add_parser, train_verifier.add_parser,
                 steer.add_parsers, guidance_bench.add_parser, tune.add_parser)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every sub-command."""
    parser = Parser(prog="diffsolve", description="Sample diffusion and flow models: fast, accurate, measured.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for add in _ADD_COMMANDS:
        add(sub)
    return parser


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The parser of the sub-command ``command``."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command]


def _message(e: BaseException) -> str:
    """The error's message on one line (a KeyError's without its quotes)."""
    text = e.args[0] if isinstance(e, KeyError) and len(e.args) == 1 else str(e)
    return " ".join(str(text).split()) or type(e).__name__


def _warning_printer(prog: str):
    """``warnings.showwarning`` for the command line: one line, ``PROG: warning: MESSAGE``."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"{prog}: warning: {_message(message) if isinstance(message, Exception) else message}",
              file=sys.stderr)
    return show


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = command_line(argv)
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # refused by the sub-command's parser, so that the message names the sub-command
            _subparser(parser, args.command).error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as e:  # --help (0) or a refused argument (2), already printed
        return e.code if isinstance(e.code, int) else 2
    args.argv = argv
    prog = f"diffsolve {args.command}"
    try:
        with warnings.catch_warnings():  # restores showwarning on the way out
            warnings.showwarning = _warning_printer(prog)
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        if os.environ.get("DIFFSOLVE_TRACEBACK", "") not in ("", "0"):
            raise
        if isinstance(e, MemoryError):
            print(f"{prog}: error: out of memory{': ' + _message(e) if str(e) else ''}; ask for less "
                  "(fewer samples, a smaller batch)", file=sys.stderr)
            return 2
        if isinstance(e, DIFFSOLVE_ERRORS):
            print(f"{prog}: error: {_message(e)}", file=sys.stderr)
            return 2
        print(f"{prog}: error: unexpected {type(e).__name__}: {_message(e)} "
              "(DIFFSOLVE_TRACEBACK=1 shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
