"""The solver registry: names and aliases -> solver classes, their options, and the listing.

A solver class joins with the :func:`register` decorator; :func:`get_solver` builds one by name
or alias with keyword options, refusing unknown options with the accepted ones named
(:func:`solver_options` reads them from the class's ``__init__``); :func:`list_solvers` is what
``diffsolve.solvers()`` prints.  This module depends on no other solver module (the package's
``__init__`` imports every solver file, which registers it).
"""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any

__all__ = ["SOLVERS", "register", "get_solver", "solver_options", "list_solvers"]

#: canonical name -> solver class
SOLVERS: dict[str, type] = {}
_ALIASES: dict[str, str] = {}


def register(cls: type) -> type:
    """Class decorator adding a solver (and its aliases) to the registry."""
    for key in (cls.name, *cls.aliases):
        if key in SOLVERS or key in _ALIASES:
            raise ValueError(f"solver name {key!r} of {cls.__name__} is already registered")
    SOLVERS[cls.name] = cls
    for a in cls.aliases:
        _ALIASES[a] = cls.name
    return cls


@lru_cache(maxsize=None)
def solver_options(cls: type) -> tuple[str, ...] | None:
    """The keyword options of a solver class, in order (None when it takes ``**kwargs``)."""
    params = inspect.signature(cls.__init__).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return tuple(p.name for p in params if p.name != "self" and p.kind is not p.VAR_POSITIONAL)


def _is_solver(obj: Any) -> bool:
    """A solver instance: anything with the ``init``/``step`` contract and a name."""
    return not isinstance(obj, type) and callable(getattr(obj, "init", None)) \
        and callable(getattr(obj, "step", None)) and isinstance(getattr(obj, "name", None), str)


def get_solver(name: Any, **options: Any):
    """A solver instance by name or alias (see ``diffsolve.solvers()``), or the instance given."""
    if _is_solver(name):
        if options:
            raise TypeError(f"options {sorted(options)} given with a solver instance; configure the instance instead")
        return name
    if not isinstance(name, str):
        raise ValueError(f"solver must be a name or a Solver instance, got {name!r}; "
                         f"accepted names: {', '.join(sorted(SOLVERS))}")
    key = _ALIASES.get(name, name)
    if key not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}; accepted: {', '.join(sorted(SOLVERS))}")
    cls = SOLVERS[key]
    accepted = solver_options(cls) if options else None
    if accepted is not None:  # name the options a solver accepts
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise TypeError(f"solver {cls.name!r} takes no option(s) {', '.join(unknown)}; "
                            f"accepted: {', '.join(accepted) or 'none'}")
    return cls(**options)


def list_solvers() -> list[dict]:
    """Every registered solver with its order, NFE rule, stochasticity, options and paper."""
    return [SOLVERS[k]().describe() for k in sorted(SOLVERS)]
