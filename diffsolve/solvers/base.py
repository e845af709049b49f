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
import math
import inspect
from functools import lru_cache
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence

import torch
from torch import Tensor

__all__ = ["SolverState", "Solver", "NoiseSource", "NFEError", "register", "SOLVERS", "get_solver",
           "bc", "lambdas"]


class NFEError(ValueError):
    """The requested number of function evaluations cannot be honoured exactly."""


def bc(v: Tensor, y: Tensor) -> Tensor:
    """Broadcast a scalar or per-row tensor against a batch ``y``.  Scalars (numbers and 0-dim
    CPU tensors such as grid levels) come back as Python floats: no tensor is built for them."""
    if isinstance(v, (int, float)):
        return v
    if isinstance(v, Tensor) and v.ndim == 0 and v.device.type == "cpu":
        return v.item()
    v = torch.as_tensor(v, dtype=y.dtype, device=y.device)
    if v.ndim == 0:
        return v
    return v.reshape(v.shape[0], *([1] * (y.ndim - 1)))


def lambdas(sigmas: Tensor) -> Tensor:
    """lambda = -log s (inf at s = 0)."""
    return -torch.log(sigmas)


def _signed(u: int) -> int:
    u &= 0xFFFFFFFFFFFFFFFF
    return u - (1 << 64) if u >= 1 << 63 else u


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_M1, _M2 = _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)


def _srl(x: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 bit patterns."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def _mix(x: Tensor) -> Tensor:
    """splitmix64 (Steele, Lea & Flood 2014) on int64 tensors; multiplication wraps mod 2^64."""
    x = x + _GOLDEN
    x = (x ^ _srl(x, 30)) * _M1
    x = (x ^ _srl(x, 27)) * _M2
    return x ^ _srl(x, 31)


class NoiseSource:
    """Counter-based per-sample Gaussian noise.

    ``normal(step, like, draw)`` returns for every row b a standard normal tensor that depends
    only on ``(seeds[b], step, draw)`` and the element index: a sample's noise is the same
    whatever batch it is in, and re-indexing particles (SMC) is re-indexing ``seeds``.

    The generator is a pure function, vectorised over the batch and run on the sample's own
    device: each element's 64 random bits are splitmix64 of (seed, step, draw, element index),
    turned into uniforms with 53-bit resolution and into normals by Box-Muller. No generator
    state, no per-sample Python loop, no host synchronisation.

        >>> import torch
        >>> src = NoiseSource([3, 7])
        >>> a = src.normal(0, torch.empty(2, 5, dtype=torch.float64))
        >>> b = NoiseSource([7]).normal(0, torch.empty(1, 5, dtype=torch.float64))
        >>> bool((a[1] == b[0]).all())
        True
    """

    def __init__(self, seeds: Sequence[int] | Tensor):
        self.seeds = [int(s) for s in (seeds.tolist() if isinstance(seeds, Tensor) else seeds)]
        self._keys = _mix(torch.tensor([_signed(s) for s in self.seeds], dtype=torch.int64))
        self._on: dict[torch.device, Tensor] = {}

    def __len__(self) -> int:
        return len(self.seeds)

    def index(self, idx: Tensor) -> "NoiseSource":
        return NoiseSource([self.seeds[int(i)] for i in idx.tolist()])

    def _keys_on(self, device: torch.device) -> Tensor:
        if device not in self._on:
            self._on[device] = self._keys.to(device)
        return self._on[device]

    def normal(self, step: int, like: Tensor, draw: int = 0) -> Tensor:
        if like.shape[0] != len(self.seeds):
            raise ValueError(f"noise source has {len(self.seeds)} seeds but the batch has {like.shape[0]} rows")
        n = math.prod(like.shape[1:])
        dev = like.device
        base = _mix(_mix(self._keys_on(dev) ^ _signed(step + 1)) ^ _signed(draw + 7))  # (B,)
        m = (n + 1) // 2
        j = torch.arange(2 * m, dtype=torch.int64, device=dev) * _GOLDEN
        bits = _mix(base[:, None] ^ j[None, :])  # (B, 2m)
        u = (_srl(bits, 11).to(torch.float64) + 0.5) * 2.0**-53  # uniform in (0, 1)
        r = torch.sqrt(-2.0 * torch.log(u[:, :m]))
        phi = (2 * math.pi) * u[:, m:]
        z = torch.cat([r * torch.cos(phi), r * torch.sin(phi)], 1)[:, :n]
        return z.reshape(like.shape).to(like.dtype)

    @classmethod
    def initial(cls, seeds: Sequence[int], shape: Sequence[int], dtype=torch.float64, device="cpu") -> Tensor:
        """Standard normal starting noise of shape (len(seeds), *shape), one seed per sample."""
        like = torch.empty(len(seeds), *shape, dtype=dtype, device=device)
        return cls(seeds).normal(-1, like)


@dataclass(frozen=True)
class SolverState:
    """Immutable state between steps.

    y: current sample at level ``sigmas[i]`` (canonical space).
    i: index of the current level.
    sigmas: the grid (float64, kept on the CPU: step-size logic and branch decisions such as
        "is the next level 0" never wait for an accelerator).
    history: denoised outputs at levels i-1, i-2, ... (most recent last) kept by multistep
        methods; length at most the method's order.
    extra: named tensors a solver keeps (e.g. UniPC's last predictor point).
    noise: the noise source of stochastic solvers (None for deterministic ones).
    grid: the same grid as Python floats (set by :meth:`Solver.init`; read it with :meth:`at`),
        so that step-size arithmetic makes no tensor operations.
    """

    y: Tensor
    i: int
    sigmas: Tensor
    history: tuple[Tensor, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    noise: NoiseSource | None = None
    grid: tuple[float, ...] | None = None

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
    def s(self) -> Tensor:
        return self.sigmas[self.i]

    @property
    def s_next(self) -> Tensor:
        return self.sigmas[self.i + 1]

    @property
    def n_steps(self) -> int:
        return self.sigmas.numel() - 1

    def reindex(self, idx: Tensor) -> "SolverState":
        """Select/repeat batch rows (particle resampling): every batch tensor is indexed."""
        B = self.y.shape[0]

        def take(v):
            if isinstance(v, Tensor) and v.ndim >= 1 and v.shape[0] == B:
                return v[idx]
            return v

        return self.replace(
            y=self.y[idx],
            history=tuple(take(h) for h in self.history),
            extra={k: take(v) for k, v in self.extra.items()},
            noise=None if self.noise is None else self.noise.index(idx),
        )


_STATE_FIELDS = frozenset(f.name for f in dataclasses.fields(SolverState))

DenoiseFn = Callable[[Tensor, Tensor], Tensor]


class Solver:
    """Base class. Subclasses set the class attributes and implement :meth:`step`.

    ``step_cost(i, n_steps, final_zero)`` is the number of denoiser calls step i makes; the
    driver checks it against the calls it counts, and uses it to turn an NFE budget into a
    number of steps (or to refuse the budget with the nearest achievable ones).
    """

    name: ClassVar[str] = "solver"
    aliases: ClassVar[tuple[str, ...]] = ()
    order: ClassVar[int] = 1
    stochastic: ClassVar[bool] = False
    paper: ClassVar[str] = ""
    nfe_rule: ClassVar[str] = "1 per step"
    evals_per_step: ClassVar[int] = 1
    #: the schedule kind the solver is usually run with
    default_schedule: ClassVar[str] = "karras"

    def __init__(self, **options: Any):
        if options:
            raise TypeError(f"solver {self.name!r} takes no options {sorted(options)}")

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
        if not isinstance(nfe, int) or nfe < 1:
            raise NFEError(f"nfe must be a positive integer, got {nfe!r}")
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

    # helpers -------------------------------------------------------------------------
    @staticmethod
    def push(history: tuple[Tensor, ...], d: Tensor, keep: int) -> tuple[Tensor, ...]:
        """Append a denoised output, keeping the last ``keep`` entries."""
        if keep <= 0:
            return ()
        return (history + (d,))[-keep:]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "aliases": ", ".join(self.aliases), "order": self.order,
                "stochastic": self.stochastic, "nfe": self.nfe_rule, "paper": self.paper}


SOLVERS: dict[str, type[Solver]] = {}
_ALIASES: dict[str, str] = {}


def register(cls: type[Solver]) -> type[Solver]:
    """Class decorator adding a solver (and its aliases) to the registry."""
    if cls.name in SOLVERS:
        raise ValueError(f"solver {cls.name!r} registered twice")
    SOLVERS[cls.name] = cls
    for a in cls.aliases:
        _ALIASES[a] = cls.name
    return cls


@lru_cache(maxsize=None)
def _accepted_options(cls: type) -> tuple[str, ...] | None:
    """The keyword options of a solver class (None when it takes ``**kwargs``)."""
    params = inspect.signature(cls.__init__).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return tuple(p.name for p in params if p.name != "self" and p.kind is not p.VAR_POSITIONAL)


def get_solver(name: str | Solver, **options: Any) -> Solver:
    """A solver instance by name or alias (see ``diffsolve.solvers()``)."""
    if isinstance(name, Solver):
        if options:
            raise TypeError("options given with a solver instance; configure the instance instead")
        return name
    key = _ALIASES.get(name, name)
    if key not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}; accepted: {', '.join(sorted(SOLVERS))}")
    cls = SOLVERS[key]
    accepted = _accepted_options(cls) if options else None
    if accepted is not None:  # name the options a solver accepts
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise TypeError(f"solver {cls.name!r} takes no option(s) {', '.join(unknown)}; "
                            f"accepted: {', '.join(accepted) or 'none'}")
    return cls(**options)
