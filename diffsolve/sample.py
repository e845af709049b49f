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

import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from .counting import CountingDenoiser, NonFiniteError
from .denoisers import Denoiser, as_denoiser
from .hooks import Hook, StepContext, apply_hooks
from .noise import NoiseSource
from .paths import Path, get_path
from .plan import Plan
from .schedules import FINALS, make_schedule, validate_schedule
from .solvers.base import Solver, SolverState, StabilityWarning, get_solver
from .checks import check_bool, check_number
from .validate import check_cond, check_dtype, check_hooks, check_nfe, check_seeds, check_state_tensor

__all__ = ["sample", "SampleResult", "Hook", "StepContext", "CountingDenoiser", "NonFiniteError", "run_solver"]


class _DefaultNFE(int):
    """The type of ``sample``'s default ``nfe`` (10), so that a plan's own NFE can replace it
    while an explicit ``nfe=10`` that disagrees with the plan is refused."""


DEFAULT_NFE = _DefaultNFE(10)


@dataclass
class SampleResult:
    """What a sampling run produced and did.

    samples: the final states (canonical space; at s = 0 these are data samples).
    nfe: denoiser calls actually made (counted at the denoiser), hooks' calls included.
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
               progress: bool = False, *, user_denoiser: Any = None, cond: dict | None = None) -> SolverState:
    """The plain loop: init, then step through the grid, calling hooks between steps (each hook
    gets a :class:`~diffsolve.hooks.StepContext`)."""
    state = solver.init(y, sigmas, noise)
    if trajectory is not None:
        trajectory.append(state.y)
    record = getattr(denoiser, "record", None)
    n = sigmas.numel() - 1
    steps = range(n)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc=solver.name, unit="step", leave=False)
    for k in steps:
        if record is not None:
            denoiser.step, denoiser.current = k, state.y
        state = solver.step(state, denoiser)
        if hooks:
            if record is not None:
                record("step", state.y)
            before = getattr(denoiser, "calls", 0)
            state = apply_hooks(hooks, StepContext(state, denoiser, user_denoiser, dict(cond or {})))
            if record is not None:
                denoiser.hook_calls += denoiser.calls - before  # network calls the hooks made
                record("hook", state.y)
        elif record is not None:
            record("step", state.y)
        if trajectory is not None:
            trajectory.append(state.y)
    return state


def sample(denoiser: Denoiser | Callable[..., Tensor], noise: Tensor, solver: str | Solver | Plan = "auto",
           nfe: int | None = DEFAULT_NFE, schedule: str | Tensor | Sequence[float] | None = None, *, plan: Plan | None = None,
           path: Path | str | None = None, s_min: float | None = None, s_max: float | None = None,
           final: str | None = None, seeds: Sequence[int] | None = None, cond: dict[str, Any] | None = None,
           hooks: Sequence[Hook] = (), return_trajectory: bool = False, progress: bool = False,
           dtype: torch.dtype | None = None, y_start: Tensor | None = None, rho: float | None = None,
           shift: float | None = None, allow_extrapolation: bool = False, **solver_options: Any) -> SampleResult:
    """Sample ``denoiser`` from standard-normal ``noise`` (shape (B, ...)).

    Args:
        denoiser: a :class:`~diffsolve.denoisers.Denoiser` (or plain ``D(y, s)``).
        noise: standard normal starting noise, a real floating tensor; the state starts at
            ``y = s_0 * noise`` (the data term dropped, as usual), unless ``y_start`` gives the
            state itself.
        solver: ``"auto"`` (the default: solver, grid and ending chosen from ``nfe`` and the path
            by the fixed rule of :mod:`diffsolve.auto`), a name from ``diffsolve.solvers()``, a
            Solver instance, or a :class:`~diffsolve.plan.Plan`.
        plan: a :class:`~diffsolve.plan.Plan` (e.g. from :func:`diffsolve.tune`): its solver,
            options and levels, exactly; ``schedule``, ``s_min``, ``s_max``, ``final``, ``rho`` and
            ``shift`` are then refused, and ``nfe`` must be None or the plan's.
        nfe: the exact number of denoiser calls (a positive integer, numpy and 0-dim tensor
            integers accepted, at most :data:`diffsolve.validate.MAX_NFE`); refused with an
            explanation when the solver cannot honour it. ``None`` with an explicit schedule:
            the schedule decides. Adaptive solvers (``dpm-solver-12``/``-23``) take ``nfe=None``:
            their NFE follows from ``rtol``/``atol`` and is reported in ``SampleResult.nfe``; a
            schedule name then gives the grid ``[s_max, s_min(, 0)]`` they integrate across.
        schedule: a name from ``diffsolve.schedules.SCHEDULES`` or an explicit list of levels; a
            list ending above 0 stops there (the samples are the states at that level, as
            ``final="s_min"``). Default: ``"karras"`` for a named solver; ``solver="auto"``
            chooses its own grid and refuses one.
        rho, shift: the spacing of ``schedule="karras"`` (default 7) and ``"flow-shift"``
            (default 3); refused for any other schedule, where they would be ignored.
        path: the path whose trained range (and time) the schedule uses; defaults to the
            denoiser's own path. Levels outside that range are refused unless
            ``allow_extrapolation``.
        final: ``"zero"`` (last step denoises to s = 0; the default for named schedules) or
            ``"s_min"`` (stop at s_min); an explicit list's end decides (a conflicting ``final``
            is refused).
        seeds: one integer in [0, 2**63) per sample for stochastic solvers (default: 0..B-1).
        cond: keyword arguments passed to the denoiser (class labels, ...), validated once by
            the denoiser's ``check`` (unknown keys, label length, dtype and range).
        hooks: functions ``hook(ctx) -> SolverState | None`` called after every step with a
            :class:`~diffsolve.hooks.StepContext` (the state, x0-hat, the counted denoiser).
        dtype: the state's dtype (default: float64 on CPU, the noise's dtype elsewhere).
        **solver_options: options of the solver (e.g. ``eta`` for DDIM).

    Raises:
        NonFiniteError: the samples are not finite; the message names the first call or step
            where a NaN or inf appeared and whether the input, the denoiser, a step or a hook
            made it.
    """
    den = as_denoiser(denoiser)
    noise = check_state_tensor("noise", noise)
    nfe_unset = nfe is DEFAULT_NFE
    nfe = check_nfe(nfe)
    p = get_path(path) if path is not None else getattr(den, "path", None)
    if isinstance(solver, Plan):
        if plan is not None:
            raise ValueError("give the plan once: solver=plan or plan=plan, not both")
        solver, plan = "auto", solver
    elif plan is not None and not isinstance(plan, Plan):
        raise TypeError(f"plan must be a diffsolve.Plan (from diffsolve.tune or Plan.load), got {type(plan).__name__}")
    if plan is None and isinstance(solver, str) and solver == "auto":
        if schedule is not None or final is not None or rho is not None or shift is not None:
            raise ValueError("solver='auto' chooses its own grid and ending; pass a solver name (e.g. 'dpm++2m') "
                             "to use schedule=, final=, rho= or shift=")
        if nfe is None:
            raise ValueError("solver='auto' needs an integer nfe (the rule picks the solver from it)")
        from .auto import auto_plan

        plan = auto_plan(nfe, p, s_min=s_min, s_max=s_max)
        s_min = s_max = None
    elif plan is not None:
        given = [n for n, v in (("schedule", schedule), ("s_min", s_min), ("s_max", s_max), ("final", final),
                                ("rho", rho), ("shift", shift)) if v is not None]
        if given:
            raise ValueError(f"a plan fixes its own levels; {', '.join(given)} cannot be given with it")
        if nfe is not None and nfe != plan.nfe and not nfe_unset:
            raise ValueError(f"nfe={nfe} but the plan makes {plan.nfe} calls; pass nfe=None or {plan.nfe}")
        if plan.path is not None and p is not None and p.name != plan.path:
            raise ValueError(f"the plan's levels were chosen for path {plan.path!r}; this denoiser samples "
                             f"path {p.name!r} (levels mean different noise on another path)")
    if plan is not None:
        clash = sorted(set(solver_options) & set(plan.options))
        if clash:
            raise ValueError(f"the plan sets solver option(s) {', '.join(clash)}; do not pass them again")
        solver, schedule, nfe = plan.solver, list(plan.sigmas), plan.nfe
        solver_options = {**plan.options, **solver_options}
    elif schedule is None:
        schedule = "karras"
    dtype = check_dtype(dtype)
    cond = check_cond(cond)
    hooks = check_hooks(hooks)
    for name, level in (("s_min", s_min), ("s_max", s_max)):
        if level is not None:
            check_number("sample", name, level, 0, low_open=True)
    if rho is not None:
        rho = check_number("sample", "rho", rho, 0, low_open=True)
    if shift is not None:
        shift = check_number("sample", "shift", shift, 0, low_open=True)
    for name, flag in (("return_trajectory", return_trajectory), ("progress", progress),
                       ("allow_extrapolation", allow_extrapolation)):
        check_bool("sample", name, flag)
    if final is not None and (not isinstance(final, str) or final not in FINALS):
        raise ValueError(f"unknown final {final!r}; accepted: {', '.join(FINALS)}")
    if not isinstance(schedule, (str, Tensor, Sequence)) or isinstance(schedule, bytes):
        raise TypeError(f"schedule must be a name or a list of noise levels, got {type(schedule).__name__}")
    slv = get_solver(solver, **solver_options)
    if dtype is None:
        dtype = torch.float64 if noise.device.type == "cpu" else noise.dtype
    noise = noise.to(dtype)

    if isinstance(schedule, str):
        final = final or "zero"
        final_zero = final == "zero"
        if nfe is None and not getattr(slv, "adaptive", False):
            raise ValueError(f"nfe=None needs an explicit schedule (a list of noise levels) or an adaptive "
                             f"solver; solver {slv.name!r} with schedule {schedule!r} needs an integer nfe")
        if nfe is not None:
            slv = slv.for_nfe(nfe, final_zero)  # budget-dependent plans (dpm-solver-fast); adaptive: refused
        n_steps = slv.steps_for_nfe(nfe, final_zero)  # adaptive solvers: nfe=None, a [s_max, (s_min,) 0] grid
        kind = "log-snr" if getattr(slv, "adaptive", False) else schedule  # adaptive: only the end points count
        sigmas = _schedule(kind, n_steps, p, s_min, s_max, final, rho, shift).clone()
    else:
        sigmas = validate_schedule(schedule)
        final_zero = bool(sigmas[-1] == 0)
        if rho is not None or shift is not None:
            raise ValueError("rho and shift shape named schedules; an explicit list of levels takes neither")
        if final is not None and final_zero != (final == "zero"):
            raise ValueError(f"final={final!r} but the explicit schedule ends at {float(sigmas[-1]):g}: a list "
                             f"ending at 0 is final='zero', one ending above 0 is final='s_min' (the samples "
                             f"are then the states at that level); omit final to take the list's own end")
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

    if y_start is None:
        y0 = noise * sigmas[0].to(dtype)
    else:
        y0 = check_state_tensor("y_start", y_start, like=noise).to(dtype)
    cond = den.check(y0, cond)
    if seeds is not None:  # checked for every solver: one integer in [0, 2**63) per sample
        seeds = check_seeds(seeds, noise.shape[0])
    src = NoiseSource(list(range(noise.shape[0])) if seeds is None else seeds) if slv.stochastic else None
    grid = tuple(sigmas.tolist())
    warning = slv.grid_warning(grid)
    if warning:
        warnings.warn(warning, StabilityWarning, stacklevel=2)

    den.prepare(sigmas, dtype)  # per-level constants of network adapters, for the whole grid at once
    counter = CountingDenoiser(den, cond)
    traj: list[Tensor] | None = [] if return_trajectory else None
    state = run_solver(slv, counter, y0, sigmas, src, hooks, traj, progress, user_denoiser=den, cond=cond)
    out = state.y
    if not bool(torch.isfinite(out).all()):
        raise counter.diagnose(slv.name, grid, warning)
    expected = None if getattr(slv, "adaptive", False) else slv.nfe_for_steps(n_steps, final_zero)
    solver_calls = counter.calls - counter.hook_calls
    if expected is not None and solver_calls != expected:
        raise RuntimeError(f"internal error: solver {slv.name!r} made {solver_calls} calls, its rule says {expected}")
    info = dict(state.extra.get("info", {}))
    if hooks:
        info["hook_nfe"] = counter.hook_calls  # included in nfe
    return SampleResult(samples=out, nfe=counter.calls, sigmas=state.sigmas, solver=slv.name,
                        eval_levels=counter.eval_levels(), trajectory=traj, info=info)
