"""Argument types and the parser class shared by every sub-command, written once.

Each type turns a command-line string into a checked value or raises
:class:`argparse.ArgumentTypeError`; argparse then answers with one line naming the flag:

    >>> import argparse
    >>> p = Parser(prog="diffsolve demo")
    >>> _ = p.add_argument("--nfe", type=nfe_arg)
    >>> p.parse_args(["--nfe", "none"]).nfe is None, p.parse_args(["--nfe", "8"]).nfe
    (True, 8)
    >>> positive_int("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: 0 is not a positive integer
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any, Callable, Iterable, NoReturn

from ..bench.methods import parse_method
from ..denoisers import PREDICTIONS
from ..models import accepted_models, is_model_name
from ..paths import PATHS
from ..schedules import SCHEDULES
from ..solvers import get_solver
from ..validate import MAX_NFE

__all__ = ["Parser", "UsageError", "positive_int", "nonneg_int", "sample_count", "seed_arg", "nfe_budget", "nfe_arg", "finite_float",
           "positive_float", "nonneg_float", "probability", "name_in", "library_check", "solver_name", "schedule_name",
           "path_name", "prediction_name", "model_name", "method_arg", "json_object", "existing_file", "output_file",
           "add_quiet", "command_line", "IMAGE_EXTENSIONS", "MAX_SAMPLES"]

#: file types ``diffsolve sample --out`` can write (matplotlib's common formats)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".pdf", ".svg", ".eps")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, ``PROG: error: MESSAGE`` (no usage block),
    exiting with status 2. Sub-command parsers inherit it."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


class UsageError(ValueError):
    """A bad combination of flags found after parsing (the message names the flags)."""


def _type(name: str, check: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type with a readable ``__name__`` (argparse uses it in some messages)."""
    check.__name__ = name
    return check


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def positive_int(text: str) -> int:
    """An integer >= 1."""
    v = _int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v} is not a positive integer")
    return v


def nonneg_int(text: str) -> int:
    """An integer >= 0 (seeds, labels, warm-up steps)."""
    v = _int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"{v} is negative; expected an integer >= 0")
    return v


#: the most samples one ``diffsolve sample`` run draws (more: several runs with other --seed)
MAX_SAMPLES = 1_000_000


def sample_count(text: str) -> int:
    """A number of samples: an integer in [1, MAX_SAMPLES]."""
    v = positive_int(text)
    if v > MAX_SAMPLES:
        raise argparse.ArgumentTypeError(f"{v} samples is more than the {MAX_SAMPLES} one run draws; "
                                          "split the work over several runs with different --seed")
    return v


def seed_arg(text: str) -> int:
    """A seed: an integer in [0, 2**63)."""
    v = nonneg_int(text)
    if v >= 2 ** 63:
        raise argparse.ArgumentTypeError(f"{v} is too large; seeds are integers in [0, 2**63)")
    return v


def nfe_budget(text: str) -> int:
    """A number of network evaluations: an integer in [1, MAX_NFE]."""
    v = positive_int(text)
    if v > MAX_NFE:
        raise argparse.ArgumentTypeError(f"{v} is more than the {MAX_NFE} network calls the driver accepts; "
                                          "fast solvers need 5-50")
    return v


def nfe_arg(text: str) -> int | None:
    """A number of network evaluations (:func:`nfe_budget`), or ``none`` / ``auto`` (None: an
    adaptive solver decides from ``--rtol/--atol``)."""
    if text.lower() in ("none", "auto"):
        return None
    try:
        return nfe_budget(text)
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(f"{e}; or 'none' for adaptive solvers (the NFE follows from --rtol/--atol)") \
            from None


def finite_float(text: str) -> float:
    """A finite number."""
    v = _float(text)
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return v


def positive_float(text: str) -> float:
    """A finite number > 0."""
    v = finite_float(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return v


def nonneg_float(text: str) -> float:
    """A number >= 0 (``inf`` allowed: an open upper end)."""
    v = _float(text)
    if math.isnan(v) or v < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number >= 0")
    return v


def probability(text: str) -> float:
    """A number in [0, 1)."""
    v = finite_float(text)
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not in [0, 1)")
    return v


def name_in(what: str, names: Iterable[str]) -> Callable[[str], str]:
    """A type accepting one of ``names``; anything else is refused with the accepted ones listed."""
    accepted = tuple(names)

    def check(text: str) -> str:
        if text not in accepted:
            raise argparse.ArgumentTypeError(f"unknown {what} {text!r}; accepted: {', '.join(accepted)}")
        return text
    return _type(what.replace(" ", "_"), check)


schedule_name = name_in("schedule", SCHEDULES)
path_name = name_in("path", PATHS)
prediction_name = name_in("prediction", PREDICTIONS)


def library_check(what: str, check: Callable[[str], Any]) -> Callable[[str], str]:
    """A type that asks the library (``check`` raises ValueError/TypeError naming the accepted
    values) and keeps the text."""
    def wrapped(text: str) -> str:
        try:
            check(text)
        except (ValueError, TypeError) as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return text
    return _type(what, wrapped)


solver_name = library_check("solver", get_solver)
method_arg = library_check("method", parse_method)


def model_name(text: str) -> str:
    """An exact mixture, a shipped model or a checkpoint path (checked, not loaded)."""
    if not is_model_name(text):
        raise argparse.ArgumentTypeError(f"unknown model {text!r}; accepted: {accepted_models()}")
    return text


def json_object(text: str) -> dict:
    """A JSON object, e.g. ``'{"hidden": 256}'``."""
    try:
        v = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid JSON ({e.msg})") from None
    if not isinstance(v, dict):
        raise argparse.ArgumentTypeError(f"{text!r} is not a JSON object ({{...}})")
    return v


def existing_file(text: str) -> str:
    """A file that exists."""
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"{text!r} does not exist or is not a file")
    return text


def output_file(extensions: Iterable[str], allow_empty: bool = False) -> Callable[[str], str]:
    """A type for a file to write: its directory must exist and its extension be one of
    ``extensions``; ``""`` means "write nothing" when ``allow_empty``."""
    exts = tuple(extensions)

    def check(text: str) -> str:
        if text == "" and allow_empty:
            return text
        ext = os.path.splitext(text)[1].lower()
        if ext not in exts:
            raise argparse.ArgumentTypeError(f"{text!r} has extension {ext or '(none)'!r}; accepted: {', '.join(exts)}"
                                              + ("; '' writes nothing" if allow_empty else ""))
        d = os.path.dirname(os.path.abspath(text))
        if not os.path.isdir(d):
            raise argparse.ArgumentTypeError(f"directory {d} of {text!r} does not exist")
        return text
    return _type("output_file", check)


def add_quiet(p: argparse.ArgumentParser, what: str = "no progress output") -> None:
    """The ``--quiet`` flag every sub-command has."""
    p.add_argument("--quiet", action="store_true", help=what)


def command_line(argv: list[str] | None) -> list[str]:
    """The arguments a command was run with (``sys.argv[1:]`` when ``main`` got none)."""
    return list(sys.argv[1:] if argv is None else argv)
