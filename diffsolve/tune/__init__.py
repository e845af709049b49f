"""Model-adapted sampling: fit a :class:`~diffsolve.plan.Plan` (solver, options, noise levels) to a
model at a given NFE, on tuning noise of its own (:func:`tune`; methods LD3 and GITS).

    >>> import diffsolve
    >>> plan = diffsolve.tune(diffsolve.exact_model("gmm-2d"), 4, shape=(2,), path="edm", batch=16,
    ...                       method="gits", budget=1000, teacher_steps=20)
    >>> plan.solver in ("unipc-bh2", "deis", "dpm++3m"), len(plan.sigmas)
    (True, 5)
"""

from ..callable_module import make_callable
from ..plan import Plan
from .fit import DEFAULT_CANDIDATES, TUNE_METHODS, TUNE_SEED0, tune

__all__ = ["tune", "Plan", "TUNE_METHODS", "DEFAULT_CANDIDATES", "TUNE_SEED0"]

make_callable(__name__, tune)
