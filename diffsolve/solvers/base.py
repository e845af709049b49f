"""The solver contract: an explicit state and a step (DESIGN.md, "Solvers: a state and a step").

A solver maps ``(denoiser, y_start, sigmas)`` to a sample through

    state = solver.init(y_start, sigmas, noise)
    for i in range(len(sigmas) - 1):
        state = solver.step(state, denoise)     # sigmas[i] -> sigmas[i+1]

The state is an immutable :class:`SolverState`; a step returns a new one.  Everything a
multistep method remembers lives in ``state.history`` (denoised outputs at earlier levels,
most recent last) and ``state.extra`` (named tensors), so that a hook may re-index every
tensor of the state (sequential Monte Carlo) or replace the sample (data consistency).

Shared conventions, so that no solver special-cases a model family:

* canonical space ``y = x / alpha``, ``s = sigma / alpha``, ``lambda = -log s``; the step size
  ``h = lambda_{i+1} - lambda_i > 0``;
* a step whose target level is ``s = 0`` is the exact limit of every exponential integrator
  of data-prediction form: ``y_{i+1} = D(y_i, s_i)`` (first order, one evaluation); high-order
  corrections would divide by ``h = inf``;
* noise for stochastic solvers comes from a counter-based :class:`NoiseSource`: the noise of
  one sample at one step depends only on that sample's seed, never on its neighbours.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor

from ..noise import NoiseSource
from .kit import bc
from .registry import SOLVERS, get_solver, register, solver_options
from .stability import linear_test_warning

__all__ = ["SolverState", "Solver", "NoiseSource", "NFEError", "StabilityWarning", "register", "SOLVERS",
           "get_solver", "bc"]


class NFEError(ValueError):
    """The requested number of function evaluations cannot be honoured exactly."""


class StabilityWarning(UserWarning):
    """A solver on a given grid amplifies its error beyond the data's scale (see
    :meth:`Solver.grid_warning`); the driver warns once per run."""


@dataclass(frozen=True)
class SolverState:
    """Immutable state between steps.

    y: current sample at level ``sigmas[i]`` (canonical space).
    i: index of the current level.
    sigmas: the grid (float64, kept on the CPU: step-size logic and branch decisions such as
        "is the next level 0" never wait for an accelerator).
    history: what a multistep method remembers of earlier levels (denoised outputs, or noise
        predictions for DEIS/iPNDM), most recent last; length at most the method's order.
    extra: named values a solver keeps (e.g. UniPC's last predictor point); batch tensors
        among them are re-indexed by :meth:`reindex`.
    noise: the noise source of stochastic solvers (None for deterministic ones).
    grid: the same grid as Python floats (set by :meth:`Solver.init`; read it with :meth:`at`),
        so that step-size arithmetic makes no tensor operations.
    x0: the denoised estimate D(y_i, s_i) made at the starting level of the step just taken,
        i.e. the first denoiser call of that step (for EDM's churn sampler that call is at the
        churned point (y_hat, s_hat)); for adaptive solvers, that of the last accepted
        sub-step; None before the first step.  Hooks read it as x0-hat.
    """

    y: Tensor
    i: int
    sigmas: Tensor
    history: tuple[Tensor, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    noise: NoiseSource | None = None
    grid: tuple[float, ...] | None = None
    x0: Tensor | None = None

    def at(self, k: int) -> float:
        """Level ``k`` of the grid as a Python float."""
        return self.grid[k] if self.grid is not None else float(self.sigmas[k])

    def replace(self, **kw) -> "SolverState":
        # what dataclasses.replace does for this frozen dataclass (no __post_init__, no InitVar),
        # without its per-call field introspection: this runs once per step
        bad = kw.keys() - _STATE_FIELDS
        if bad:
            raise TypeError(f"SolverState has no field(s) {sorted(bad)}; fields: {sorted(_STATE_FIELDS)}")
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.__dict__.update(kw)
        return new

    @property
    def s(self) -> float:
        """The current level s_i (a Python float)."""
        return self.at(self.i)

    @property
    def s_next(self) -> float:
        """The target level s_{i+1} of the next step (a Python float)."""
        return self.at(self.i + 1)

    @property
    def n_steps(self) -> int:
        return self.sigmas.numel() - 1

    def reindex(self, idx: Tensor) -> "SolverState":
        """Select or repeat batch rows (particle resampling): row k of the result is row
        ``idx[k]`` of this state in ``y``, ``x0``, every history entry, every batch tensor of
        ``extra`` and the noise seeds."""
        B = self.y.shape[0]
        if isinstance(idx, Tensor) and (idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool):
            raise TypeError(f"reindex needs integer row indices, got a tensor of dtype {idx.dtype} "
                            f"(a float index would be truncated)")
        if not isinstance(idx, Tensor) and any(isinstance(v, (bool, float)) for v in list(idx)):
            raise TypeError(f"reindex needs integer row indices, got {list(idx)!r}")
        idx = torch.as_tensor(idx, dtype=torch.long)
        if idx.ndim != 1 or (idx.numel() and not (0 <= int(idx.min()) and int(idx.max()) < B)):
            raise ValueError(f"reindex needs a 1-D index of rows in [0, {B}), got {idx.tolist()!r}")

        def take(v):
            if isinstance(v, Tensor) and v.ndim >= 1 and v.shape[0] == B:
                return v[idx.to(v.device)]
            return v

        return self.replace(
            y=take(self.y),
            x0=take(self.x0),
            history=tuple(take(h) for h in self.history),
            extra={k: take(v) for k, v in self.extra.items()},
            noise=None if self.noise is None else self.noise.index(idx),
        )


_STATE_FIELDS = frozenset(f.name for f in dataclasses.fields(SolverState))

DenoiseFn = Callable[[Tensor, "float | Tensor"], Tensor]


def _default_nfe_rule(k: int) -> str:
    """The NFE rule of a method with k evaluations per step and a one-evaluation step to s = 0."""
    if k == 1:
        return "1 per step"
    return f"{k} per step, 1 for a final step to s=0 ({k}N-{k - 1} for N steps to zero)"


class Solver:
    """Base class. Subclasses set the class attributes and implement :meth:`step`.

    Metadata has one source, the class attributes: ``order`` (of the default configuration; a
    solver whose options change its order sets the instance's ``order`` from the same table
    that defines the options), ``evals_per_step``, ``nfe_rule`` (derived from
    ``evals_per_step`` unless a class states a different rule), ``paper``;
    :meth:`describe` reads them.

    ``step_cost(i, n_steps, final_zero)`` is the number of denoiser calls step i makes; the
    driver checks it against the calls it counts, and uses it to turn an NFE budget into a
    number of steps (or to refuse the budget with the nearest achievable ones).

    Every ``step`` sets ``state.x0`` (see :class:`SolverState`).
    """

    name: ClassVar[str] = "solver"
    aliases: ClassVar[tuple[str, ...]] = ()
    order: ClassVar[int] = 1
    stochastic: ClassVar[bool] = False
    adaptive: ClassVar[bool] = False
    paper: ClassVar[str] = ""
    evals_per_step: ClassVar[int] = 1
    nfe_rule: ClassVar[str] = "1 per step"
    #: the schedule kind the solver is usually run with
    default_schedule: ClassVar[str] = "karras"
    #: what :meth:`grid_warning` advises when this solver amplifies on a grid (measured on the
    #: exact mixtures; see :mod:`diffsolve.solvers.stability`)
    stability_advice: ClassVar[str] = "use more steps, or dpm++2m (within 1.9x the data's RMS on every grid measured)"

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if "nfe_rule" not in cls.__dict__:
            cls.nfe_rule = _default_nfe_rule(cls.evals_per_step)

    def __init__(self, **options: Any):
        if options:
            raise TypeError(f"solver {self.name!r} takes no options {sorted(options)}")

    @property
    def owner(self) -> str:
        """How errors about this solver's options name it."""
        return f"solver {self.name!r}"

    # -- NFE bookkeeping --------------------------------------------------------------
    def step_cost(self, i: int, n_steps: int, final_zero: bool) -> int:
        if final_zero and i == n_steps - 1:
            return 1
        return self.evals_per_step

    def nfe_for_steps(self, n_steps: int, final_zero: bool = True) -> int:
        return sum(self.step_cost(i, n_steps, final_zero) for i in range(n_steps))

    def for_nfe(self, nfe: int, final_zero: bool = True) -> "Solver":
        """The solver to run for a budget of exactly ``nfe`` evaluations (the driver calls this
        before :meth:`steps_for_nfe`).  Usually ``self``: the per-step costs depend only on the
        number of steps.  A solver whose step plan depends on the budget itself (DPM-Solver-fast:
        nfe = 9, 10, 11 all take four steps) returns a copy configured for it, so that no
        instance is mutated; an adaptive solver refuses a budget here."""
        return self

    def steps_for_nfe(self, nfe: int, final_zero: bool = True) -> int:
        if isinstance(nfe, bool) or not isinstance(nfe, numbers.Integral) or nfe < 1:
            raise NFEError(f"nfe must be a positive integer, got {nfe!r}")
        nfe = int(nfe)  # numpy integers
        # start the scan near the answer (the scan is O(n^2) step_cost calls from n = 1); fall back
        # to n = 1 if the guess already meets the budget (a cost rule that is not near-uniform)
        n = max(1, nfe // max(self.evals_per_step, 1) - 2)
        if n > 1 and self.nfe_for_steps(n, final_zero) >= nfe:
            n = 1
        lower = None
        while True:
            c = self.nfe_for_steps(n, final_zero)
            if c == nfe:
                return n
            if c > nfe:
                break
            lower, n = c, n + 1
        raise NFEError(
            f"solver {self.name!r} cannot use exactly nfe={nfe}: it needs {self.nfe_rule}; "
            f"nearest budgets it can honour: {lower} or {c}"
        )

    # -- the algorithm ----------------------------------------------------------------
    def init(self, y: Tensor, sigmas: Tensor, noise: NoiseSource | None = None) -> SolverState:
        if self.stochastic and noise is None:
            raise ValueError(f"solver {self.name!r} is stochastic and needs a noise source (pass seeds=...)")
        sigmas = sigmas.detach().to(device="cpu", dtype=torch.float64)
        return SolverState(y=y, i=0, sigmas=sigmas, noise=noise, grid=tuple(sigmas.tolist()))

    def step(self, state: SolverState, denoise: DenoiseFn) -> SolverState:  # pragma: no cover
        raise NotImplementedError

    # -- stability ----------------------------------------------------------------------
    def grid_warning(self, grid: tuple[float, ...]) -> str | None:
        """A one-line warning when this solver on ``grid`` (levels s_0 > ... > s_N, floats)
        amplifies its error beyond the data's scale, else None.  Decided from the grid alone by
        running the solver on the linear test problem of Gaussian data (see
        :mod:`diffsolve.solvers.stability`, which says where the threshold comes from).
        Stochastic solvers are tested on the spread of their samples; adaptive ones return None
        (they control their own error)."""
        if self.adaptive:
            return None
        return linear_test_warning(self, tuple(float(v) for v in grid))

    # helpers -------------------------------------------------------------------------
    @staticmethod
    def push(history: tuple[Tensor, ...], d: Tensor, keep: int) -> tuple[Tensor, ...]:
        """Append a denoised output, keeping the last ``keep`` entries."""
        if keep <= 0:
            return ()
        return (history + (d,))[-keep:]

    def describe(self) -> dict[str, Any]:
        """The solver's metadata (class attributes; ``order`` of this configuration) and options."""
        return {"name": self.name, "aliases": ", ".join(self.aliases), "order": self.order,
                "stochastic": self.stochastic, "nfe": self.nfe_rule, "paper": self.paper,
                "options": ", ".join(solver_options(type(self)) or ())}
