"""One call for posterior sampling: ``solve_inverse(prior, operator, y, sigma_y, method, nfe)``."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from ..denoisers import Denoiser, as_denoiser
from ..noise import NoiseSource
from ..validate import check_cond, check_nfe, check_state_tensor
from .methods import InverseMethod, get_method
from .operators import Operator
from .problem import Problem

__all__ = ["solve_inverse", "DEFAULT_METHOD"]

#: the method used when none is named: ``"auto"``, one measured choice per operator family
#: (``diffsolve.inverse.methods.auto.DEFAULT_METHODS``: DPS ending at s = 0.1 for inpainting,
#: PiGDM (ddpm, ending at 0.1) for super-resolution, DDRM for deblurring and denoising, DPS for
#: dense and unknown operators; chosen by PSNR at 20 NFE on MNIST, numbers there);
#: ``res.info["method"]`` names the method it ran and ``res.info["auto"]`` the rule
#: ("inpainting -> dps").  It was ``"dps"`` for every operator before.
DEFAULT_METHOD = "auto"


def solve_inverse(prior: Denoiser, operator: Operator, y: Tensor, sigma_y: float, method: str | InverseMethod = DEFAULT_METHOD,
                  nfe: int = 20, *, num: int | None = None, noise: Tensor | None = None,
                  seeds: Sequence[int] | None = None, cond: dict[str, Any] | None = None, progress: bool = False,
                  **options: Any):
    """Posterior samples of ``prior`` given the measurement ``y = A x0 + sigma_y n``.

    Args:
        prior: a Denoiser with a ``shape`` (a shipped model, an exact mixture, any adapter).
        operator: a :class:`~diffsolve.inverse.Operator` (its ``in_shape`` is the prior's shape).
        y: measurements, (B, *operator.out_shape); one row is shared by all ``num`` samples.
        sigma_y: the measurement noise, in the prior's data units (for the shipped image
            models [-1, 1]: 0.05 in [0, 1] pixel units is 0.1; see
            :func:`~diffsolve.inverse.sigma_in_model_units`).
        method: a name from :func:`diffsolve.inverse.methods` or a method instance; the
            default ``"auto"`` picks per operator family (:data:`DEFAULT_METHOD`).
        nfe: network calls to spend in all (a vector-Jacobian product counts as one call).
        num: samples to draw (default: the rows of ``y``, or of ``noise``).
        noise, seeds: starting noise (default: per-sample seeded noise from ``seeds``, default
            0..num-1); seeds also drive every stochastic step.
        cond: conditioning of the prior (class labels, ...).
        **options: the method's options.

    Returns a :class:`~diffsolve.SampleResult` whose ``samples`` are posterior samples in data
    space, ``nfe`` all network calls, ``info["vjp"]`` the vector-Jacobian products among them
    and ``info["method"]`` / ``["operator"]`` / ``["sigma_y"]`` what was run (with ``"auto"``:
    ``info["auto"]`` the rule applied and ``info["method_options"]`` the options).
    """
    prior = as_denoiser(prior)
    shape = getattr(prior, "shape", None)
    if shape is None:
        raise ValueError("the prior has no `shape`; give it one (prior.shape = (...)) so that the operator's "
                         "input can be checked")
    if not isinstance(operator, Operator):
        raise TypeError(f"operator must be a diffsolve.inverse.Operator, got {type(operator).__name__}")
    if tuple(operator.in_shape) != tuple(shape):
        raise ValueError(f"the operator takes inputs of shape {tuple(operator.in_shape)}, the prior makes "
                         f"samples of shape {tuple(shape)}")
    nfe = check_nfe(nfe)
    if nfe is None:
        raise ValueError("solve_inverse needs an integer nfe (network calls to spend)")
    problem = Problem(operator, y, sigma_y)
    if noise is not None:
        noise = check_state_tensor("noise", noise)
        n = noise.shape[0]
    else:
        n = num if num is not None else (len(seeds) if seeds is not None else y.shape[0])
    if num is not None and num != n:
        raise ValueError(f"num={num} but noise has {n} rows")
    if y.shape[0] not in (1, n):
        raise ValueError(f"y has {y.shape[0]} rows for {n} samples: give one measurement, or one per sample")
    seeds = list(range(n)) if seeds is None else list(seeds)
    if len(seeds) != n:
        raise ValueError(f"{len(seeds)} seeds for {n} samples: give one seed per sample")
    if noise is None:
        noise = NoiseSource.initial(seeds, shape)
    if y.shape[0] == 1 and n > 1:
        problem = Problem(operator, y.expand(n, *y.shape[1:]), problem.sigma_y)
    m = get_method(method, **options)
    res = m.run(prior, problem, noise.to(torch.float64) if noise.device.type == "cpu" else noise, nfe=nfe,
                seeds=seeds, cond=check_cond(cond), progress=progress)
    res.info.setdefault("vjp", 0)
    res.info.update(method=res.info.pop("resolved", m.name), operator=repr(operator), sigma_y=problem.sigma_y)
    return res
