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
from ..models.checkpoint import locate
from ..models.gmm import BUILTINS
from ..paths import PATHS
from ..schedules import SCHEDULES
from ..solvers import get_solver
from ..validate import MAX_NFE

__all__ = ["Parser", "UsageError", "int_range", "float_range", "positive_int", "nonneg_int", "sample_count", "seed_arg", "nfe_budget", "nfe_arg", "finite_float",
           "positive_float", "nonneg_float", "probability", "name_in", "library_check", "solver_name", "schedule_name",
           "path_name", "prediction_name", "model_name", "load_continuous_model", "method_arg", "json_object", "existing_file", "output_file",
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


def _parse(conv: Callable[[str], Any], text: str, what: str) -> Any:
    try:
        return conv(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None


def int_range(lo: int, hi: int | None = None, above: str = "") -> Callable[[str], int]:
    """A type for an integer in [lo, hi] (no upper end when ``hi`` is None); ``above`` tells a
    value above ``hi`` what to do instead."""
    def check(text: str) -> int:
        v = _parse(int, text, "an integer")
        if v < lo:
            raise argparse.ArgumentTypeError(f"{v} is not {'a positive integer' if lo == 1 else f'an integer >= {lo}'}")
        if hi is not None and v > hi:
            raise argparse.ArgumentTypeError(f"{v} is more than {hi}{above}")
        return v
    return _type(f"int_in_{lo}_{hi}", check)


def float_range(what: str, lo: float = -math.inf, hi: float = math.inf, *, lo_open: bool = False,
                hi_open: bool = False, infinite: bool = False) -> Callable[[str], float]:
    """A type for a number in [lo, hi] (``lo_open`` / ``hi_open``: the end excluded), finite
    unless ``infinite``; refusals say it is not ``what``."""
    def check(text: str) -> float:
        v = _parse(float, text, "a number")
        ok = (not math.isnan(v) and (infinite or math.isfinite(v)) and (v > lo if lo_open else v >= lo)
              and (v < hi if hi_open else v <= hi))
        if not ok:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return v
    return _type(what.replace(" ", "_"), check)


#: the most samples one ``diffsolve sample`` run draws (more: several runs with other --seed)
MAX_SAMPLES = 1_000_000

positive_int = int_range(1)
nonneg_int = int_range(0)                                              # labels, seeds of a sweep, warm-up steps
sample_count = int_range(1, MAX_SAMPLES, " samples, the most one run draws; split the work over several runs "
                                         "with different --seed")
seed_arg = int_range(0, 2 ** 63 - 1, "; seeds are integers in [0, 2**63)")
nfe_budget = int_range(1, MAX_NFE, " network calls, the most the driver accepts; fast solvers need 5-50")
finite_float = float_range("a finite number")
positive_float = float_range("a positive finite number", 0.0, lo_open=True)
nonneg_float = float_range("a number >= 0 (inf allowed)", 0.0, infinite=True)
probability = float_range("a number in [0, 1)", 0.0, 1.0, hi_open=True)


def nfe_arg(text: str) -> int | None:
    """A number of network evaluations (``nfe_budget``), or ``none`` / ``auto`` (None: an
    adaptive solver decides from ``--rtol/--atol``)."""
    if text.lower() in ("none", "auto"):
        return None
    try:
        return nfe_budget(text)
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(f"{e}; or 'none' for adaptive solvers (the NFE follows from --rtol/--atol)") \
            from None


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


solver_name = library_check("solver", lambda v: v if v == "auto" else get_solver(v))  # auto: diffsolve.auto
method_arg = library_check("method", parse_method)


def load_continuous_model(name: str) -> Any:
    """The model ``--model`` names, loaded: a load failure or a model that is not a
    diffusion/flow denoiser (a text model) is a :class:`UsageError` naming the flag."""
    from ..models import load_model

    try:
        model = load_model(name)
    except (ValueError, OSError) as e:  # a checkpoint found at parse time that does not load
        raise UsageError(f"argument --model: {e}") from None
    if getattr(model, "shape", None) is None:
        raise UsageError(f"argument --model: {name!r} is not a diffusion/flow model")
    return model


def model_name(text: str) -> str:
    """An exact mixture, a shipped model or a checkpoint path (found, not loaded: a path with
    another extension than .json/.safetensors, or without its JSON, is refused)."""
    if not is_model_name(text):
        raise argparse.ArgumentTypeError(f"unknown model {text!r}; accepted: {accepted_models()}")
    if text not in BUILTINS:
        try:
            locate(text)
        except (ValueError, TypeError, OSError) as e:
            raise argparse.ArgumentTypeError(str(e)) from None
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
