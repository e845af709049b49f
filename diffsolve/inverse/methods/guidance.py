"""What the gradient- and proximal-style posterior samplers share (DPS, PiGDM, DiffPIR, DAPS,
RED-diff): a guidance wrapper whose vector-Jacobian products through the denoiser are counted,
budget rules that refuse an NFE a method cannot spend exactly, the explicit x0-hat clipping
option, operator-family defaults and the operator's largest singular value.

Guidance in canonical space (DESIGN.md): adding a term g to the score of p_s(y) is
``D' = D + s^2 g``.  For a likelihood approximated through x0-hat, ``g = J^T v`` where
``J = dD/dy`` and ``v`` is a covector on data (``v = grad_x0 log p(meas | x0)`` at x0 = D for
DPS; PiGDM's preconditioned residual): one vector-Jacobian product (VJP) per call, counted
here and reported in ``res.info["vjp"]``.

The wrapper itself is :class:`diffsolve.guidance.VJPGuided` (shared with reward guidance and
twisted SMC).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from ...sample import SampleResult, sample
from ...guidance.gradient import VJPGuided, check_clip, clip_x0
from ...solvers.base import NFEError
from ..operators import Operator

__all__ = ["VJPGuided", "check_clip", "clip_x0", "calls_per_step_budget", "family", "per_family",
           "largest_singular_value", "with_cost", "run_guided", "demo_problem"]

def calls_per_step_budget(owner: str, nfe: int, per: int, what: str) -> int:
    """``nfe // per`` when ``per`` divides ``nfe``, else an NFEError naming the nearest budgets."""
    if nfe % per:
        lo, hi = (nfe // per) * per, (nfe // per + 1) * per
        near = f"{lo} or {hi}" if lo > 0 else f"{hi}"
        raise NFEError(f"{owner} cannot use exactly nfe={nfe}: it spends {per} network calls {what}; "
                       f"nearest budgets it can honour: {near}")
    return nfe // per


def with_cost(owner: str, per: int, run: Callable[[int], Any], nfe: int, what: str):
    """Run ``run(nfe // per)`` (a call into ``sample``), translating the solver's refusal of an
    inner budget into the outer budget (x ``per``)."""
    inner = calls_per_step_budget(owner, nfe, per, what)
    try:
        return run(inner)
    except NFEError as e:
        msg = str(e)
        raise NFEError(f"{owner}: nfe={nfe} means {inner} solver evaluations ({per} network calls each, {what}); "
                       f"the solver refused them: {msg} (multiply its budgets by {per})") from None


#: operator families with their own defaults (by ``operator.name``, lower-cased substring)
FAMILIES = (("inpaint", "inpainting"), ("super", "super-resolution"), ("blur", "deblurring"),
            ("denois", "denoising"))


def family(operator: Operator) -> str:
    """The operator's family for per-task defaults: inpainting, super-resolution, deblurring,
    denoising, or ``"default"`` (dense and unknown operators).

    >>> from diffsolve.inverse import LinearOperator
    >>> family(LinearOperator(torch.eye(2), (2,)))
    'default'
    """
    name = str(getattr(operator, "name", "")).lower()
    for key, fam in FAMILIES:
        if key in name:
            return fam
    return "default"


def per_family(value: Any, table: dict[str, Any], operator: Operator) -> Any:
    """``value`` if the user gave one, else the table's entry for the operator's family."""
    if value is not None:
        return value
    return table.get(family(operator), table["default"])


def largest_singular_value(operator: Operator, dtype=torch.float64, iters: int = 50) -> float:
    """||A||_2: from the SVD where the operator has one, else by power iteration on A^T A
    (forward/adjoint only; a fixed start, so deterministic)."""
    svd = operator.svd()
    if svd is not None:
        return float(svd.sv.max()) if svd.rank else 0.0
    x = torch.ones(1, *operator.in_shape, dtype=dtype)
    x = x / x.norm()
    lam = 0.0
    for _ in range(iters):
        z = operator.adjoint(operator.forward(x))
        lam = float(z.norm())
        if lam == 0.0:
            return 0.0
        x = z / lam
    return math.sqrt(lam)


def demo_problem(sigma_y: float = 0.05):
    """The small problem the methods' examples run: the 2-D mixture prior, A = [1, 0.5] and the
    measurement 0.5 (its modes at (0, 1) and (0.71, -0.71) fit it), as keyword arguments of
    :func:`~diffsolve.inverse.solve_inverse`.

    >>> sorted(demo_problem())
    ['operator', 'prior', 'sigma_y', 'y']
    """
    from ...models.gmm import builtin
    from ..operators import LinearOperator

    A = LinearOperator(torch.tensor([[1.0, 0.5]], dtype=torch.float64), (2,))
    return {"prior": builtin("gmm-2d"), "operator": A, "y": torch.tensor([[0.5]], dtype=torch.float64),
            "sigma_y": sigma_y}


def run_guided(owner: str, wrapper: VJPGuided, noise: Tensor, *, nfe: int, seeds: Sequence[int],
               cond: dict[str, Any], solver: str, progress: bool, **solver_options: Any) -> SampleResult:
    """Sample ``wrapper`` with any solver of ours at ``nfe`` network calls in all: every solver
    evaluation is one forward call and one VJP, so the solver gets ``nfe / 2`` evaluations.
    ``res.nfe`` = forward calls counted by the driver + VJPs counted by the wrapper."""
    res = with_cost(owner, 2, lambda n: sample(wrapper, noise, solver=solver, nfe=n, seeds=list(seeds), cond=cond,
                                               progress=progress, **solver_options),
                    nfe, "per solver evaluation (a forward call and a VJP)")
    if wrapper.vjps != res.nfe:
        raise RuntimeError(f"internal error: {owner} made {res.nfe} forward calls and {wrapper.vjps} VJPs")
    res.info.update(vjp=wrapper.vjps, forward=res.nfe, solver=res.solver)
    res.nfe = res.nfe + wrapper.vjps
    return res
