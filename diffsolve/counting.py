"""The counted denoiser the driver hands to a solver: it counts every call (``SampleResult.nfe``
is what it counted, never an estimate), checks the denoiser contract on each output, records
the levels, and keeps cheap finiteness records so that a non-finite result is traced to its
cause (which call, which level; the input, the denoiser, a solver step or a hook) instead of
one generic hint.

The records are sums of the tensors involved, kept as 0-dim tensors (no host synchronisation
per call): each call's output, its input where that is not the state the step started from
(intermediate stages), and the state after each step and after the hooks.  They are read only
when the final samples are not finite.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .denoisers import Denoiser, expand_s

__all__ = ["CountingDenoiser", "NonFiniteError"]


class NonFiniteError(FloatingPointError):
    """The samples are not finite; the message says where the first NaN or inf appeared."""


def _who(den: Any) -> str:
    return type(den).__name__


class CountingDenoiser:
    """Counts calls (one call = one network evaluation of the whole batch) and checks outputs."""

    def __init__(self, inner: Denoiser, cond: dict[str, Any]):
        self.inner, self.cond, self.calls, self.hook_calls = inner, cond, 0, 0
        self.levels: list[Tensor | float] = []
        self._sums: list[tuple[int, Tensor, Tensor]] = []  # (step, sum of input, sum of output)
        self._step_sums: list[tuple[str, int, Tensor]] = []  # ("step" | "hook", step, sum of y)
        self.step = 0
        self.current: Tensor | None = None  # the state's y at the start of the current step

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
        if not isinstance(out, Tensor):
            raise TypeError(f"the denoiser {_who(self.inner)} returned a {type(out).__name__} at call "
                            f"{self.calls}; a denoiser returns a floating tensor of its input's shape")
        if out.shape != y.shape:
            raise ValueError(f"denoiser returned shape {tuple(out.shape)} for input {tuple(y.shape)} "
                             f"(call {self.calls}); a denoiser returns a tensor of its input's shape")
        if out.is_complex() or not out.is_floating_point():
            raise TypeError(f"the denoiser {_who(self.inner)} returned dtype {out.dtype} at call {self.calls}; "
                            f"a denoiser returns a real floating tensor")
        # the input's sum only when it is not the state the step started from (that one is recorded
        # after the previous step): multistep solvers pay one reduction per call, multi-stage ones two
        s_in = None if y is self.current else _total(y)
        self._sums.append((self.step, s_in, _total(out)))
        return out

    def record(self, what: str, y: Tensor) -> None:
        """Note the state after a solver step (``what="step"``) or after the hooks (``"hook"``)."""
        self._step_sums.append((what, self.step, _total(y)))

    def eval_levels(self) -> Tensor:
        """The level of every call (the first row's, for per-row levels), float64 on the CPU."""
        return torch.tensor([v if isinstance(v, float) else float(v[0]) for v in self.levels], dtype=torch.float64)

    def _level(self, k: int) -> str:
        v = self.levels[k]
        return f"{v if isinstance(v, float) else float(v[0]):.6g}"

    def diagnose(self, solver: str, grid: tuple[float, ...], warning: str | None = None) -> NonFiniteError:
        """The error to raise for non-finite samples: the first record that is not finite."""
        calls = iter(enumerate(self._sums))
        steps = iter(self._step_sums)
        pending_call, pending_step = next(calls, None), next(steps, None)
        # walk the records in the order they were made: calls of step i come before step i's record
        while pending_call is not None or pending_step is not None:
            take_call = pending_call is not None and (pending_step is None or pending_call[1][0] <= pending_step[1])
            if take_call:
                k, (step, s_in, s_out) = pending_call
                at = f"call {k + 1} (step {step + 1}, level s={self._level(k)})"
                if s_in is not None and not bool(torch.isfinite(s_in)):
                    return NonFiniteError(
                        f"solver {solver!r}: the input to {at} was already NaN/inf while every earlier "
                        f"denoiser output was finite: the solver's step is unstable on this grid "
                        f"(steps {_steps(grid, step)}). {warning or 'Try more steps or dpm++2m.'}")
                if not bool(torch.isfinite(s_out)):
                    return NonFiniteError(
                        f"the denoiser {_who(self.inner)} returned NaN/inf at {at} from a finite input: the "
                        f"denoiser (its weights, its conditioning, or a guidance scale / wrapper around it) "
                        f"is at fault, not the solver")
                pending_call = next(calls, None)
            else:
                what, step, s_y = pending_step
                if not bool(torch.isfinite(s_y)):
                    if what == "hook":
                        return NonFiniteError(f"a hook made the state NaN/inf after step {step + 1} (its input "
                                              f"was finite): check the hooks")
                    return NonFiniteError(
                        f"solver {solver!r}: step {step + 1} (s {_steps(grid, step)}) produced NaN/inf from "
                        f"finite denoiser outputs: the step is unstable on this grid. "
                        f"{warning or 'Try more steps or dpm++2m.'}")
                pending_step = next(steps, None)
        return NonFiniteError(f"solver {solver!r} produced non-finite samples (the values overflow in the "
                              f"last operations); {warning or 'try more steps or dpm++2m'}")


def _total(x: Tensor) -> Tensor:
    """A 0-dim float64 sum of ``x``: finite exactly when every element is (float64 accumulation:
    no overflow from finite float32 values), computed without a host synchronisation."""
    return (x.detach() if x.requires_grad else x).sum(dtype=torch.float64)


def _steps(grid: tuple[float, ...], step: int) -> str:
    if step + 1 < len(grid):
        return f"{grid[step]:.6g} -> {grid[step + 1]:.6g}"
    return "?"
