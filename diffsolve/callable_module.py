"""Packages that are also functions: ``diffsolve.steer(...)``, ``diffsolve.tune(...)`` and
``diffsolve.solvers()`` call their package's main function while ``diffsolve.steer.X`` stays the
package.

    >>> import diffsolve
    >>> callable(diffsolve.tune), hasattr(diffsolve.tune, "Plan")
    (True, True)
"""

from __future__ import annotations

import sys
import types
from typing import Any, Callable

__all__ = ["make_callable"]


def make_callable(module_name: str, fn: Callable[..., Any]) -> None:
    """Calling the module ``module_name`` calls ``fn``."""

    class _CallableModule(types.ModuleType):
        __doc__ = sys.modules[module_name].__doc__

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

    sys.modules[module_name].__class__ = _CallableModule
