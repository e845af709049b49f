"""Method keys: how a sweep names what it runs, and which budgets each method can honour.

* ``diffsolve:SOLVER[SCHEDULE]`` or ``diffsolve:SOLVER[SCHEDULE]{opt=value,...}`` for our solvers
  (options in :data:`GRID_OPTIONS` go to the grid, the others to the solver); every solver in
  :data:`diffsolve.solvers.SOLVERS` is picked up by :func:`default_methods`;
* ``diffusers:...``, ``k-diffusion:...``, ``torchdiffeq:...`` for the peers of
  :mod:`diffsolve.bench.peers`;
* ``diffsolve:auto`` (``solver="auto"``: the rule of :mod:`diffsolve.auto`) and
  ``diffsolve:tuned[METHOD]`` (a plan fitted by :func:`diffsolve.tune` with METHOD, ``ld3`` or
  ``gits``, on tuning noise disjoint from the sweep's, at NFE 3-:data:`TUNED_MAX_NFE`);
* ``reference:rk4-vs-dopri5`` (the reference's own error) and ``exact:floor`` (the distribution
  metrics between two exact sample sets of the batch size), one row per model and seed.

    >>> from diffsolve.bench.methods import parse_method
    >>> info = parse_method("diffsolve:deis[karras]{final=s_min,lower_order_final=last}")
    >>> info["solver"], info["schedule"], info["options"], info["kind"]
    ('deis', 'karras', {'final': 's_min', 'lower_order_final': 'last'}, 'fixed')
    >>> parse_method("diffsolve:dpm++2m[karas]")
    Traceback (most recent call last):
    ...
    ValueError: unknown schedule 'karas' in method key 'diffsolve:dpm++2m[karas]'; accepted: karras, log-snr, time, time-linspace, time-leading, time-trailing, time-quadratic, flow-shift
"""

from __future__ import annotations

import inspect
import re
from typing import Any, Iterable, Sequence

from ..schedules import SCHEDULES
from ..solvers import SOLVERS, NFEError, get_solver
from .peers import PEERS, peer_feasible
from .spec import DEFAULT_SCHEDULES

__all__ = ["REFERENCE", "FLOOR", "AUTO", "TUNED", "TUNED_MAX_NFE", "EXTRA_OPTIONS", "STOP_AT_S_MIN", "GRID_OPTIONS", "parse_method", "method_key",
           "default_methods", "solver_options", "feasible"]

REFERENCE, FLOOR = "reference:rk4-vs-dopri5", "exact:floor"
AUTO, TUNED = "diffsolve:auto", "diffsolve:tuned[ld3]"
#: the largest NFE tuned rows are made for (tuning is for the few-step regime; its cost grows as NFE^2)
TUNED_MAX_NFE = 10
_TUNED = re.compile(r"^diffsolve:tuned\[(?P<method>[^\]]+)\]$")
#: non-default options of our solvers that the default sweep also runs
EXTRA_OPTIONS: dict[str, list[dict[str, Any]]] = {
    "dpm++3m": [{"variant": "reference"}, {"variant": "taylor"}],  # whichever is not the default
    "deis": [{"variable": "s"}, {"variable": "log-s"}],  # polynomial in rho or log(rho): the non-default one
    # step-size rule: the default integral controller over the batch, or the paper's Algorithm 4
    "dpm-solver-12": [{"controller": "paper", "error_norm": "sample-max"}],
    "dpm-solver-23": [{"controller": "paper", "error_norm": "sample-max"}],
    "unipc-bh1": [{"order": 3}],
    "unipc-bh2": [{"order": 3}],
}
#: grids that stop at s_min with no final denoise (diffusers' convention): the multistep solvers
#: whose long last step then needs a lower order, with both rules for it (dpmpp.multistep_order)
STOP_AT_S_MIN: dict[str, Any] = {"solvers": ("deis", "dpm++3m", "unipc-bh2"),
                                 "schedules": ("time-linspace", "time-quadratic", "karras"),
                                 "lower_order_final": (True, "last")}
#: method-key options that go to the grid (``diffsolve.sample``'s keywords), not to the solver
GRID_OPTIONS = ("final", "rho", "shift")

_DS = re.compile(r"^diffsolve:(?P<solver>[^\[\]{}]+)\[(?P<schedule>[^\]]+)\](?:\{(?P<opts>[^}]*)\})?$")


def _opt_value(v: str) -> Any:
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(v, v)


def _check_schedules(schedules: Iterable[str], where: str = "") -> None:
    unknown = [s for s in schedules if s not in SCHEDULES]
    if unknown:
        raise ValueError(f"unknown schedule {unknown[0]!r}{where}; accepted: {', '.join(SCHEDULES)}")


def parse_method(key: str) -> dict[str, Any]:
    """Split a method key into lib, solver, schedule, options and kind (fixed/adaptive/stochastic/
    reference/floor); unknown solvers, schedules and peers are refused with the accepted ones."""
    if key in (REFERENCE, FLOOR):
        return {"lib": key.split(":")[0], "solver": key.split(":")[1], "schedule": "", "options": {},
                "kind": "reference" if key == REFERENCE else "floor"}
    if key == AUTO:
        return {"lib": "diffsolve", "solver": "auto", "schedule": "auto", "options": {}, "kind": "fixed"}
    t = _TUNED.match(key)
    if t:
        from ..tune import TUNE_METHODS

        if t.group("method") not in TUNE_METHODS:
            raise ValueError(f"unknown tuning method {t.group('method')!r} in method key {key!r}; accepted: "
                             f"{', '.join(TUNE_METHODS)}")
        return {"lib": "diffsolve", "solver": "tuned", "schedule": t.group("method"), "options": {}, "kind": "fixed"}
    if key.startswith("diffsolve:"):
        m = _DS.match(key)
        if not m:
            raise ValueError(f"bad method key {key!r}; expected diffsolve:SOLVER[SCHEDULE] or "
                             "diffsolve:SOLVER[SCHEDULE]{opt=value,...}")
        opts = {}
        if m.group("opts"):
            for part in m.group("opts").split(","):
                k, _, v = part.partition("=")
                opts[k.strip()] = _opt_value(v.strip())
        _check_schedules([m.group("schedule")], f" in method key {key!r}")
        cls = type(get_solver(m.group("solver")))  # raises with the accepted names (or resolves an alias)
        kind = "adaptive" if getattr(cls, "adaptive", False) else "stochastic" if cls.stochastic else "fixed"
        return {"lib": "diffsolve", "solver": cls.name, "schedule": m.group("schedule"), "options": opts, "kind": kind}
    if key not in PEERS:
        raise ValueError(f"unknown method {key!r}; accepted: diffsolve:SOLVER[SCHEDULE], {REFERENCE}, {FLOOR}, "
                         f"or a peer: {', '.join(PEERS)}")
    p = PEERS[key]
    return {"lib": p.lib, "solver": p.label, "schedule": "", "options": {}, "kind": p.kind}


def method_key(solver: str, schedule: str, opts: dict[str, Any] | None = None) -> str:
    """The key of one of our solvers on a schedule with options.

    >>> method_key("deis", "karras", {"final": "s_min"})
    'diffsolve:deis[karras]{final=s_min}'
    """
    s = f"diffsolve:{solver}[{schedule}]"
    if opts:
        s += "{" + ",".join(f"{k}={v}" for k, v in opts.items()) + "}"
    return s


def _variants(cls: type) -> list[dict[str, Any]]:
    """The default configuration of a solver and the :data:`EXTRA_OPTIONS` that differ from it."""
    variants: list[dict[str, Any]] = [{}]
    try:
        defaults = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()}
    except (TypeError, ValueError):
        defaults = {}
    for opts in EXTRA_OPTIONS.get(cls.name, []):
        if all(defaults.get(k, inspect.Parameter.empty) == v for k, v in opts.items()):
            continue  # the default configuration, already in the sweep
        try:
            cls(**opts)
        except (TypeError, ValueError):
            continue
        variants.append(opts)
    return variants


def default_methods(schedules: Sequence[str] = DEFAULT_SCHEDULES, peers: bool = True,
                    solvers: Iterable[str] | None = None) -> list[str]:
    """Every registered solver of ours (or those named in ``solvers``) on each schedule (adaptive
    ones on ``log-snr`` only: the schedule only gives them their end points; stochastic ones on
    ``karras`` only), with the options of :data:`EXTRA_OPTIONS` and the grids of
    :data:`STOP_AT_S_MIN`, then every peer. Unknown solver or schedule names are refused.

    >>> default_methods(schedules=("karras",), peers=False, solvers=("heun",))
    ['diffsolve:heun[karras]']
    """
    schedules = tuple(schedules)
    if not schedules:
        raise ValueError(f"default_methods needs at least one schedule; accepted: {', '.join(SCHEDULES)}")
    _check_schedules(schedules)
    names = sorted(SOLVERS if solvers is None else {type(get_solver(n)).name for n in solvers})
    out = []
    for name in names:
        cls = SOLVERS[name]
        if getattr(cls, "adaptive", False):
            scheds: Sequence[str] = ("log-snr",)  # the schedule only gives an adaptive solver its end points
        elif cls.stochastic:
            scheds = (schedules[0] if "karras" not in schedules else "karras",)  # reported apart; one grid
        else:
            scheds = schedules
        for opts in _variants(cls):
            for sch in scheds:
                out.append(method_key(name, sch, opts))
        if name in STOP_AT_S_MIN["solvers"]:
            for lof in STOP_AT_S_MIN["lower_order_final"]:
                for sch in (sch for sch in schedules if sch in STOP_AT_S_MIN["schedules"]):
                    out.append(method_key(name, sch, {"final": "s_min", "lower_order_final": lof}))
    if solvers is None:
        out.extend([AUTO, TUNED])
    if peers:
        out.extend(PEERS)
    return out


def solver_options(opts: dict[str, Any]) -> dict[str, Any]:
    """The options of a method key that go to the solver (not to the grid)."""
    return {k: v for k, v in opts.items() if k not in GRID_OPTIONS}


def feasible(key: str, nfe: int) -> bool:
    """Whether a fixed-budget method can spend exactly ``nfe`` network calls (adaptive,
    reference and floor methods have no NFE budget: False)."""
    info = parse_method(key)
    if info["kind"] in ("adaptive", "reference", "floor"):
        return False
    if info["solver"] == "auto":
        return True
    if info["solver"] == "tuned":
        return 3 <= nfe <= TUNED_MAX_NFE
    if info["lib"] == "diffsolve":
        to_zero = info["options"].get("final", "zero") == "zero"
        solver = get_solver(info["solver"], **solver_options(info["options"]))
        try:
            solver.for_nfe(nfe, to_zero).steps_for_nfe(nfe, to_zero)
            return True
        except NFEError:
            return False
    return peer_feasible(PEERS[key], nfe)
