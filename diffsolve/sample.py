"""The driver: one call that samples any Denoiser with any solver on any schedule.

Example::

    >>> import torch, diffsolve
    >>> from diffsolve.models.gmm import builtin
    >>> gmm = builtin("gmm-2d")
    >>> noise = torch.randn(16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> res = diffsolve.sample(gmm, noise, solver="dpm++2m", nfe=8, schedule="karras")
    >>> res.nfe, res.samples.shape
    (8, torch.Size([16, 2]))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from .denoisers import Denoiser, as_denoiser, expand_s
from .paths import Path, get_path
from .schedules import FINALS, make_schedule, validate_schedule
from .solvers.base import NoiseSource, Solver, SolverState, get_solver

__all__ = ["sample", "SampleResult", "Hook", "CountingDenoiser", "run_solver"]

Hook = Callable[[SolverState], "SolverState | None"]


class CountingDenoiser:
    """Counts calls (one call = one network evaluation of the whole batch) and checks inputs."""

    def __init__(self, inner: Denoiser, cond: dict[str, Any]):
        self.inner, self.cond, self.calls = inner, cond, 0
        self.levels: list[Tensor | float] = []

    def __call__(self, y: Tensor, s: Tensor | float) -> Tensor:
        self.calls += 1
        # a Python float is one level for the whole batch (what grid solvers pass): it goes to the
        # denoiser as it is (Denoiser.__call__ expands it; network adapters use cached constants)
        if isinstance(s, Tensor) and s.ndim == 0 and s.device.type == "cpu":
            s = float(s)  # a 0-dim grid level: one Python float (no tensor work downstream)
        elif not isinstance(s, float):
            s = expand_s(s, y)
        self.levels.append(s)  # gathered once at the end (not one tensor operation per call)
        out = self.inner(y, s, **self.cond)
        if out.shape != y.shape:
            raise ValueError(f"denoiser returned shape {tuple(out.shape)} for input {tuple(y.shape)}")
        return out

    def eval_levels(self) -> Tensor:
        """The level of every call (the first row's, for per-row levels), float64 on the CPU."""
        return torch.tensor([v if isinstance(v, float) else float(v[0]) for v in self.levels], dtype=torch.float64)


@dataclass
class SampleResult:
    """What a sampling run produced and did.

    samples: the final states (canonical space; at s = 0 these are data samples).
    nfe: denoiser calls actually made (counted at the denoiser).
    sigmas: the grid of noise levels the solver stepped through.
    eval_levels: the noise levels at which the denoiser was called, in order.
    trajectory: the state after every step (including the start), if requested.
    """

    samples: Tensor
    nfe: int
    sigmas: Tensor
    solver: str
    eval_levels: Tensor
    trajectory: list[Tensor] | None = None
    info: dict[str, Any] = field(default_factory=dict)


@lru_cache(maxsize=256)
def _schedule(kind: str, n_steps: int, path: Path | None, s_min, s_max, final: str, rho: float,
              shift: float) -> Tensor:
    """Grids are pure functions of their arguments (paths are immutable): sampling batch after
    batch with one configuration builds its grid once."""
    return make_schedule(kind, n_steps, path=path, s_min=s_min, s_max=s_max, final=final, rho=rho, shift=shift)


def run_solver(solver: Solver, denoiser: Callable[[Tensor, Tensor], Tensor], y: Tensor, sigmas: Tensor,
               noise: NoiseSource | None = None, hooks: Sequence[Hook] = (), trajectory: list | None = None,
               progress: bool = False) -> SolverState:
    """The plain loop: init, then step through the grid, calling hooks between steps."""
    state = solver.init(y, sigmas, noise)
    if trajectory is not None:
        trajectory.append(state.y)
    n = sigmas.numel() - 1
    steps = range(n)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc=solver.name, unit="step", leave=False)
    for _ in steps:
        state = solver.step(state, denoiser)
        for hook in hooks:
            new = hook(state)
            if new is not None:
                state = new
        if trajectory is not None:
            trajectory.append(state.y)
    return state


def sample(denoiser: Denoiser | Callable[..., Tensor], noise: Tensor, solver: str | Solver = "dpm++2m",
           nfe: int | None = 10, schedule: str | Tensor | Sequence[float] = "karras", *,
           path: Path | str | None = None, s_min: float | None = None, s_max: float | None = None,
           final: str = "zero", seeds: Sequence[int] | None = None, cond: dict[str, Any] | None = None,
           hooks: Sequence[Hook] = (), return_trajectory: bool = False, progress: bool = False,
           dtype: torch.dtype | None = None, y_start: Tensor | None = None, rho: float = 7.0,
           shift: float = 3.0, allow_extrapolation: bool = False, **solver_options: Any) -> SampleResult:
    """Sample ``denoiser`` from standard-normal ``noise`` (shape (B, ...)).

    Args:
        denoiser: a :class:`~diffsolve.denoisers.Denoiser` (or plain ``D(y, s)``).
        noise: standard normal starting noise; the state starts at ``y = s_0 * noise``
            (the data term dropped, as usual), unless ``y_start`` gives the state itself.
        solver: a name from ``diffsolve.solvers()`` or a Solver instance.
        nfe: the exact number of denoiser calls; refused with an explanation when the solver
            cannot honour it. ``None`` with an explicit schedule: the schedule decides.
            Adaptive solvers (``dpm-solver-12``/``-23``) take ``nfe=None``: their NFE follows from
            ``rtol``/``atol`` and is reported in ``SampleResult.nfe``; a schedule name then gives
            the grid ``[s_max, s_min(, 0)]`` they integrate across.
        schedule: a name from ``diffsolve.schedules.SCHEDULES`` or an explicit list of levels.
        path: the path whose trained range (and time) the schedule uses; defaults to the
            denoiser's own path. Levels outside that range are refused unless
            ``allow_extrapolation``.
        final: ``"zero"`` (last step denoises to s = 0) or ``"s_min"`` (stop at s_min).
        seeds: one integer per sample for stochastic solvers (default: 0..B-1).
        cond: keyword arguments passed to the denoiser (class labels, ...).
        hooks: functions ``hook(state) -> state | None`` called after every step.
        dtype: the state's dtype (default: float64 on CPU, the noise's dtype elsewhere).
        **solver_options: options of the solver (e.g. ``eta`` for DDIM).
    """
    den = as_denoiser(denoiser)
    if not isinstance(noise, Tensor) or noise.ndim < 1 or noise.shape[0] < 1:
        raise ValueError("noise must be a tensor of shape (batch, ...) with batch >= 1")
    if not bool(torch.isfinite(noise).all()):
        raise ValueError("noise contains NaN or inf")
    if final not in FINALS:
        raise ValueError(f"unknown final {final!r}; accepted: {', '.join(FINALS)}")
    slv = get_solver(solver, **solver_options)
    p = get_path(path) if path is not None else getattr(den, "path", None)
    if dtype is None:
        dtype = torch.float64 if noise.device.type == "cpu" else noise.dtype
    noise = noise.to(dtype)

    if isinstance(schedule, str):
        final_zero = final == "zero"
        if nfe is None and not getattr(slv, "adaptive", False):
            raise ValueError("nfe=None needs an explicit schedule (a list of noise levels)")
        if nfe is not None:
            slv = slv.for_nfe(nfe, final_zero)  # budget-dependent plans (dpm-solver-fast); adaptive: refused
        n_steps = slv.steps_for_nfe(nfe, final_zero)  # adaptive solvers: nfe=None, a [s_max, (s_min,) 0] grid
        kind = "log-snr" if getattr(slv, "adaptive", False) else schedule  # adaptive: only the end points count
        sigmas = _schedule(kind, n_steps, p, s_min, s_max, final, rho, shift).clone()
    else:
        sigmas = validate_schedule(schedule)
        final_zero = bool(sigmas[-1] == 0)
        n_steps = sigmas.numel() - 1
        if nfe is not None:
            slv = slv.for_nfe(nfe, final_zero)
        if nfe is not None and slv.nfe_for_steps(n_steps, final_zero) != nfe:
            raise ValueError(
                f"solver {slv.name!r} makes {slv.nfe_for_steps(n_steps, final_zero)} evaluations on this "
                f"{n_steps}-step schedule, not nfe={nfe}; pass nfe=None to let the schedule decide")
    allow = allow_extrapolation or getattr(den, "allow_extrapolation", False)
    if p is not None and not allow:
        p.check_s(sigmas[:-1] if final_zero else sigmas, "schedule level")

    y0 = noise * sigmas[0].to(dtype) if y_start is None else y_start.to(dtype)
    if y0.shape != noise.shape:
        raise ValueError(f"y_start has shape {tuple(y0.shape)}, noise {tuple(noise.shape)}")
    src = None
    if slv.stochastic:
        seeds = list(range(noise.shape[0])) if seeds is None else list(seeds)
        src = NoiseSource(seeds)
        if len(src) != noise.shape[0]:
            raise ValueError(f"{len(src)} seeds for a batch of {noise.shape[0]}")

    prepare = getattr(den, "prepare", None)
    if prepare is not None:  # per-level constants of network adapters, computed for the whole grid at once
        prepare(sigmas, dtype)
    counter = CountingDenoiser(den, dict(cond or {}))
    traj: list[Tensor] | None = [] if return_trajectory else None
    state = run_solver(slv, counter, y0, sigmas, src, hooks, traj, progress)
    expected = None if getattr(slv, "adaptive", False) else slv.nfe_for_steps(n_steps, final_zero)
    if expected is not None and counter.calls != expected:
        raise RuntimeError(f"internal error: solver {slv.name!r} made {counter.calls} calls, its rule says {expected}")
    out = state.y
    if not bool(torch.isfinite(out).all()):
        raise FloatingPointError(
            f"solver {slv.name!r} produced non-finite samples (nfe={counter.calls}, schedule from "
            f"{float(sigmas[0]):.4g} to {float(sigmas[-1]):.4g}); try more steps or a lower-order solver")
    levels = counter.eval_levels()
    return SampleResult(samples=out, nfe=counter.calls, sigmas=state.sigmas, solver=slv.name,
                        eval_levels=levels, trajectory=traj, info=dict(state.extra.get("info", {})))
