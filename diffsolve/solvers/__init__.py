"""Solver registry. Importing this package registers every solver module."""

from .base import SOLVERS, NFEError, NoiseSource, Solver, SolverState, get_solver, register
from . import euler, heun, dpmpp, rk4, dpm_solver, rf_solver, adaptive  # noqa: F401  (registration)
from . import unipc, deis, ipndm  # noqa: F401  (registration: multistep solvers)
from . import stochastic, sde_dpmpp  # noqa: F401  (registration: stochastic samplers)

__all__ = ["SOLVERS", "NFEError", "NoiseSource", "Solver", "SolverState", "get_solver", "register", "list_solvers"]


def list_solvers() -> list[dict]:
    """Every registered solver with its order, NFE rule, stochasticity and paper."""
    return [SOLVERS[k]().describe() for k in sorted(SOLVERS)]


class _CallableModule(__import__("types").ModuleType):
    """``diffsolve.solvers()`` lists the solvers while ``diffsolve.solvers.X`` stays the package."""

    def __call__(self) -> list[dict]:
        return list_solvers()


__import__("sys").modules[__name__].__class__ = _CallableModule
