"""What a sweep runs: :class:`SweepSpec`, its defaults, and the checks it passes when built.

A sweep is models x methods x budgets x seeds. Methods are named by keys (see
:mod:`~diffsolve.bench.methods`); the spec is expanded into cells by
:func:`~diffsolve.bench.cells.make_cells` and run by :func:`~diffsolve.bench.run.run_sweep`.

    >>> from diffsolve.bench.spec import SweepSpec
    >>> SweepSpec(models=("gmm-2d",), nfes=(4, 8)).batch
    64
    >>> SweepSpec(models=("gmm-2d",), nfes=(0, 8))
    Traceback (most recent call last):
    ...
    diffsolve.bench.spec.SpecError: SweepSpec nfes must be integers in [1, 100000], got 0
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Sequence

from ..denoisers import PREDICTIONS
from ..paths import PATHS
from ..validate import MAX_NFE

__all__ = ["SweepSpec", "SpecError", "DEFAULT_NFES", "DEFAULT_SCHEDULES", "DEFAULT_RTOLS", "DEFAULT_MODELS"]

DEFAULT_MODELS = ("gmm-2d", "gmm-64", "gmm-3072")
DEFAULT_NFES = (3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 50)
DEFAULT_SCHEDULES = ("log-snr", "karras", "time-linspace", "time-quadratic", "time")
DEFAULT_RTOLS = (0.1, 0.03, 0.01, 0.003, 0.001)


class SpecError(ValueError):
    """A field of a :class:`SweepSpec` that cannot run; ``field`` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(f"SweepSpec {field} {message}")
        self.field = field


@dataclass(frozen=True)
class SweepSpec:
    """What to sweep. ``methods`` are method keys (:mod:`~diffsolve.bench.methods`); ``nfes`` the
    budgets of fixed-budget methods, ``rtols`` the tolerances of adaptive ones; ``seeds`` give each
    (model, seed) its own starting noise for ``batch`` samples; the reference is RK4 with
    ``ref_steps`` steps, cross-checked by dopri5 at ``ref_rtol``; ``n_proj`` projections for the
    sliced W2 distance; tuned rows fit their plan with ``tune_budget`` calls on ``tune_batch``
    samples of their own noise and keep it in ``plans_dir`` (None: in memory only). Bad values are refused when the spec is built."""

    models: Sequence[str] = DEFAULT_MODELS
    methods: Sequence[str] = ()
    nfes: Sequence[int] = DEFAULT_NFES
    rtols: Sequence[float] = DEFAULT_RTOLS
    seeds: Sequence[int] = (0, 1)
    batch: int = 64
    path: str = "ddpm-linear"
    prediction: str = "eps"
    ref_steps: int = 300
    ref_rtol: float = 1e-8
    n_proj: int = 256
    tune_budget: int = 6000
    tune_batch: int = 128
    plans_dir: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.models, str) or not self.models or not all(isinstance(m, str) for m in self.models):
            raise SpecError("models", f"must be a non-empty sequence of model names, got {self.models!r}")
        if isinstance(self.methods, str) or not all(isinstance(m, str) for m in self.methods):
            raise SpecError("methods", f"must be a sequence of method keys, got {self.methods!r}")
        _check_ints("nfes", self.nfes, 1, MAX_NFE)
        _check_ints("seeds", self.seeds, 0)
        for name in ("batch", "n_proj", "tune_budget", "tune_batch"):
            _check_ints(name, (getattr(self, name),), 1)
        _check_ints("ref_steps", (self.ref_steps,), 1, (MAX_NFE - 1) // 4)  # RK4: 4 calls a step, + the final one
        _check_positive("rtols", self.rtols)
        _check_positive("ref_rtol", (self.ref_rtol,))
        if self.path not in PATHS:
            raise SpecError("path", f"{self.path!r} is unknown; accepted: {', '.join(PATHS)}")
        if self.prediction not in PREDICTIONS:
            raise SpecError("prediction", f"{self.prediction!r} is unknown; accepted: {', '.join(PREDICTIONS)}")


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _check_ints(name: str, values: Sequence[Any], minimum: int, maximum: int | None = None) -> None:
    bad = [v for v in values if not _is_int(v) or v < minimum or (maximum is not None and v > maximum)]
    if bad or isinstance(values, str):
        within = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
        raise SpecError(name, f"must be integers {within}, got {bad[0] if bad else values!r}")


def _check_positive(name: str, values: Sequence[Any]) -> None:
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v <= 0]
    if bad:
        raise SpecError(name, f"must be finite numbers > 0, got {bad[0]!r}")
