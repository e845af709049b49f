"""Denoising losses for every prediction type on any :class:`~diffsolve.paths.Path`.

A training pair is built in the path's own variables: draw a noise level, then
``x_t = alpha(t) x0 + sigma(t) eps`` and the target ``prediction_from_x0(prediction, x0, x_t, t)``
(the exact inverse of the sampling-time adapter, so training and sampling agree by
construction).  ``prediction="edm"`` is EDM's preconditioned network (Karras et al. 2022,
Table 1 and Eq. 8): F(c_in y; c_noise) is regressed on (x0 - c_skip y) / c_out, which is
the loss lambda(sigma) ||D - x0||^2 with lambda = 1 / c_out^2.

Loss weighting (``weighting``):

* ``"none"``: plain mean squared error in the prediction's own space (eps-MSE for eps,
  "simple" loss of Ho et al. 2020; v-MSE; flow-matching MSE for velocity; EDM's loss).
* ``"min-snr"``: Min-SNR-gamma (Hang et al. 2023): the x0-space error weighted by
  min(SNR, gamma) with SNR = 1/s^2, written in the prediction's space by dividing by
  (d prediction / d x0)^2 at fixed x_t (exact: the map is affine in x0).

Noise levels (``noise_dist``): ``"uniform"`` t ~ U[t_min, t_max] in path time;
``"lognormal"`` ln s ~ N(p_mean, p_std^2) (EDM Sec. 5), clipped to the path's range.

    >>> import torch
    >>> from diffsolve.nets import MLP
    >>> from diffsolve.train.losses import diffusion_loss
    >>> net = MLP(dim=2, hidden=16, depth=1)
    >>> x0 = torch.randn(32, 2)
    >>> loss = diffusion_loss(net, x0, "flow", "velocity", generator=torch.Generator().manual_seed(0))
    >>> loss.ndim, bool(loss > 0)
    (0, True)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..denoisers import PREDICTIONS, _bc, edm_preconditioning, prediction_from_x0
from ..paths import Path, get_path

__all__ = ["diffusion_loss", "sample_levels", "WEIGHTINGS", "NOISE_DISTS"]

WEIGHTINGS = ("none", "min-snr")
NOISE_DISTS = ("uniform", "lognormal")


def sample_levels(path: Path, n: int, generator: torch.Generator | None = None, noise_dist: str = "uniform",
                  p_mean: float = -1.2, p_std: float = 1.2) -> tuple[Tensor, Tensor]:
    """(t, s): ``n`` training noise levels in path time and canonical s (float64)."""
    if noise_dist == "uniform":
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        t = path.t_min + (path.t_max - path.t_min) * u
        return t, path.s(t)
    if noise_dist == "lognormal":
        z = torch.randn(n, generator=generator, dtype=torch.float64)
        s = torch.exp(p_mean + p_std * z).clamp(max(path.s_min, 1e-12), path.s_max)
        return path.t_of_s(s), s
    raise ValueError(f"unknown noise_dist {noise_dist!r}; accepted: {', '.join(NOISE_DISTS)}")


def _x0_jacobian_sq(prediction: str, x: Tensor, t: Tensor, path: Path) -> Tensor:
    """(d prediction / d x0)^2 at fixed x_t, per row (the map x0 -> prediction is affine)."""
    one = torch.ones(x.shape[0], dtype=torch.float64)
    zero = torch.zeros_like(one)
    d = prediction_from_x0(prediction, one, zero, t, path) - prediction_from_x0(prediction, zero, zero, t, path)
    return d * d


def diffusion_loss(net: nn.Module, x0: Tensor, path: Path | str, prediction: str = "eps", *,
                   labels: Tensor | None = None, generator: torch.Generator | None = None,
                   noise_dist: str = "uniform", weighting: str = "none", sigma_data: float = 0.5,
                   p_mean: float = -1.2, p_std: float = 1.2, min_snr_gamma: float = 5.0,
                   reduce: bool = True) -> Tensor:
    """The denoising loss of ``net`` on a batch of clean data ``x0`` (B, ...).

    ``net(x, t, labels=...)`` is called with path time ``t`` (or EDM's c_noise for
    ``prediction="edm"``). All randomness comes from ``generator``. Returns the batch mean
    (or per-row losses with ``reduce=False``).
    """
    path = get_path(path)
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; accepted: {', '.join(PREDICTIONS)}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; accepted: {', '.join(WEIGHTINGS)}")
    b = x0.shape[0]
    t, s = sample_levels(path, b, generator, noise_dist, p_mean, p_std)
    eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    kw = {} if labels is None else {"labels": labels}
    if prediction == "edm":
        # EDM Eq. 7-8 in canonical space: y = x0 + s eps, D = c_skip y + c_out F(c_in y, c_noise)
        c_skip, c_out, c_in, c_noise = (c.to(x0.dtype) for c in edm_preconditioning(s, sigma_data))
        y = x0 + _bc(s.to(x0.dtype), x0) * eps
        out = net(_bc(c_in, y) * y, c_noise, **kw)
        target = (x0 - _bc(c_skip, y) * y) / _bc(c_out, y)
        jac2 = 1.0 / c_out.double() ** 2  # dF/dx0 = 1 / c_out
    else:
        a, sg = path.alpha(t).to(x0.dtype), path.sigma(t).to(x0.dtype)
        x = _bc(a, x0) * x0 + _bc(sg, x0) * eps
        out = net(x, t.to(x0.dtype), **kw)
        target = prediction_from_x0(prediction, x0, x, t, path).to(x0.dtype)
        jac2 = None
    per_row = (out - target).pow(2).reshape(b, -1).mean(1)
    if weighting == "min-snr":
        snr = 1.0 / (s * s)
        if jac2 is None:
            jac2 = _x0_jacobian_sq(prediction, x, t, path)
        w = snr.clamp(max=min_snr_gamma) / jac2
        per_row = per_row * w.to(per_row.dtype)
    return per_row.mean() if reduce else per_row
