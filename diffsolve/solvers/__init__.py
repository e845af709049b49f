"""The solvers.  Importing this package registers every solver module.

Layout: :mod:`.registry` (names -> classes, options, the listing), :mod:`.kit` (step size,
eps from D, broadcast, the multistep order rule, option validators: each written once),
:mod:`.base` (the state and the Solver contract), :mod:`.stability` (grid warnings), then one
file per family.  The noise source lives in :mod:`diffsolve.noise` (re-exported here).
"""

from ..callable_module import make_callable
from ..noise import NoiseSource
from .base import NFEError, Solver, SolverState, StabilityWarning
from .registry import SOLVERS, get_solver, list_solvers, register, solver_options
from . import euler, heun, dpmpp, rk4, dpm_solver, rf_solver, adaptive  # noqa: F401  (registration)
from . import unipc, deis, ipndm  # noqa: F401  (registration: multistep solvers)
from . import stochastic, sde_dpmpp  # noqa: F401  (registration: stochastic samplers)

__all__ = ["SOLVERS", "NFEError", "NoiseSource", "Solver", "SolverState", "StabilityWarning", "get_solver",
           "register", "list_solvers", "solver_options"]


make_callable(__name__, list_solvers)  # diffsolve.solvers() lists the solvers
