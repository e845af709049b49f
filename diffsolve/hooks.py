"""Hooks: functions that see the state between steps and may replace it (DESIGN.md, role 2).

After every solver step the driver calls each hook with a :class:`StepContext`:

* ``ctx.state``: the :class:`~diffsolve.solvers.SolverState` after the step (its fields can be
  read on the context directly: ``ctx.y``, ``ctx.i``, ``ctx.sigmas``, ``ctx.replace(...)`` ...);
* ``ctx.x0``: the denoised estimate x0-hat the step made at its starting level;
* ``ctx.denoise(y, s)``: the denoiser with the run's conditioning bound, counted in the run's
  NFE (a hook that calls it spends network calls: SMC, data consistency, search);
* ``ctx.denoiser`` (the denoiser as given) and ``ctx.cond``.

A hook returns a new state (``ctx.replace(y=...)`` or ``ctx.state.reindex(idx)``) or None
to keep the state; anything else is refused.

    >>> import torch, diffsolve
    >>> g = diffsolve.exact_model("gmm-2d")
    >>> seen = []
    >>> hook = lambda ctx: seen.append((ctx.i, tuple(ctx.x0.shape)))
    >>> _ = diffsolve.sample(g, torch.randn(3, 2), nfe=3, hooks=[hook])
    >>> seen
    [(1, (3, 2)), (2, (3, 2)), (3, (3, 2))]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from torch import Tensor

from .solvers.base import SolverState

__all__ = ["Hook", "StepContext", "apply_hooks"]


@dataclass(frozen=True)
class StepContext:
    """What a hook sees after a step (see the module docstring)."""

    state: SolverState
    denoise: Callable[[Tensor, Any], Tensor]
    denoiser: Any
    cond: dict[str, Any]

    @property
    def x0(self) -> Tensor | None:
        """x0-hat: the denoised estimate the step made at its starting level."""
        return self.state.x0

    @property
    def s(self) -> float:
        """The level the state is at now, as a Python float."""
        return self.state.at(self.state.i)

    def __getattr__(self, name: str) -> Any:  # the state's fields and methods, read through
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.state, name)


Hook = Callable[[StepContext], "SolverState | None"]


def _name(hook: Callable) -> str:
    return getattr(hook, "__qualname__", None) or type(hook).__name__


def apply_hooks(hooks: Sequence[Hook], ctx: StepContext) -> SolverState:
    """Run ``hooks`` in order on the state after a step; each sees the state the previous left."""
    state = ctx.state
    for k, hook in enumerate(hooks):
        new = hook(ctx if k == 0 else StepContext(state, ctx.denoise, ctx.denoiser, ctx.cond))
        if new is None:
            continue
        if not isinstance(new, SolverState):
            hint = " (return ctx.state, or None to keep it)" if isinstance(new, StepContext) else ""
            raise TypeError(f"hook {k} ({_name(hook)}) returned a {type(new).__name__}; a hook returns a "
                            f"SolverState (e.g. ctx.replace(y=...)) or None{hint}")
        y, old = new.y, state.y
        if not isinstance(y, Tensor) or y.ndim != old.ndim or y.shape[1:] != old.shape[1:] \
                or y.dtype != old.dtype or y.device != old.device:
            got = (f"shape {tuple(y.shape)}, {y.dtype}, {y.device}" if isinstance(y, Tensor)
                   else type(y).__name__)
            raise ValueError(f"hook {k} ({_name(hook)}) returned a state whose y is {got}; it must keep "
                             f"the sample shape {tuple(old.shape[1:])}, {old.dtype} and {old.device} "
                             f"(resample rows with state.reindex(idx))")
        if y.shape[0] != old.shape[0]:  # resampling: every batch tensor must follow (state.reindex does)
            stale = [f"history[{j}]" for j, h in enumerate(new.history)
                     if isinstance(h, Tensor) and h.ndim >= 1 and h.shape[0] != y.shape[0]]
            if isinstance(new.x0, Tensor) and new.x0.shape[0] != y.shape[0]:
                stale.append("x0")
            if new.noise is not None and len(new.noise) != y.shape[0]:
                stale.append("noise seeds")
            if stale:
                raise ValueError(f"hook {k} ({_name(hook)}) changed the batch from {old.shape[0]} to {y.shape[0]} "
                                 f"rows but left {', '.join(stale)} at the old size; change rows with "
                                 f"ctx.state.reindex(idx), which re-indexes every batch tensor")
        if new.i != state.i:
            raise ValueError(f"hook {k} ({_name(hook)}) moved the step index from {state.i} to {new.i}; "
                             f"hooks change the state, not the position on the grid")
        state = new
    return state
