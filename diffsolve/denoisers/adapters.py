"""Network adapters: the exact algebra that turns any network into a canonical Denoiser.

:func:`from_network` adapts a network ``f(x, t, **cond)`` trained on a :class:`~diffsolve.paths.Path`
with one of the prediction types in :data:`PREDICTIONS`:

=============  ==============================================  ===========================
prediction     network output                                  x0 from it
=============  ==============================================  ===========================
``eps``        eps                                             (x - sigma eps) / alpha
``x0``         x0                                              x0
``v``          alpha eps - sigma x0 (Salimans & Ho)            (alpha x - sigma v) / (alpha^2 + sigma^2)
``score``      grad log p_t(x) = -eps / sigma                  (x + sigma^2 score) / alpha
``velocity``   dx/dt = alpha' x0 + sigma' eps                  (sigma' x - sigma u) / (sigma' alpha - sigma alpha')
``edm``        raw F of EDM's preconditioning (Table 1)        c_skip y + c_out F(c_in y, ln(s)/4)
=============  ==============================================  ===========================

Example::

    >>> import torch
    >>> from diffsolve import get_path, from_network
    >>> from diffsolve.models.gmm import builtin
    >>> gmm = builtin("gmm-2d")
    >>> path = get_path("flow")
    >>> net = gmm.network(path, "velocity")          # exact velocity field f(x, t)
    >>> D = from_network(net, path, "velocity")
    >>> y, s = torch.randn(4, 2, dtype=torch.float64), torch.full((4,), 0.7, dtype=torch.float64)
    >>> bool((D(y, s) - gmm.denoiser(y, s)).abs().max() < 1e-12)
    True
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from ..paths import Path, get_path
from ..tensors import bc
from ..checks import check_bool, check_number
from .base import Denoiser, accepted_keywords

__all__ = ["NetworkDenoiser", "from_network", "x0_from_prediction", "prediction_from_x0",
           "edm_preconditioning", "PREDICTIONS"]

PREDICTIONS = ("eps", "x0", "v", "score", "velocity", "edm")


def _coeffs(path: Path, t: Tensor, y: Tensor):
    a, sg = path.alpha(t).to(y.dtype), path.sigma(t).to(y.dtype)
    return bc(a, y), bc(sg, y)


def x0_from_prediction(prediction: str, out: Tensor, x: Tensor, t: Tensor, path: Path,
                       coeffs: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Exact x0 from a network output of the given prediction type at path time ``t``
    (``coeffs``: alpha(t), sigma(t) already broadcast against ``x``, when the caller has them)."""
    a, sg = _coeffs(path, t, x) if coeffs is None else coeffs
    if prediction == "eps":
        if isinstance(sg, float):  # one shared level (the sampling loop): two fused operations
            return torch.sub(x, out, alpha=sg).div_(a)
        return (x - sg * out) / a
    if prediction == "x0":
        return out
    if prediction == "v":
        return (a * x - sg * out) / (a * a + sg * sg)
    if prediction == "score":
        return (x + sg * sg * out) / a
    if prediction == "velocity":
        da, ds = bc(path.dalpha(t).to(x.dtype), x), bc(path.dsigma(t).to(x.dtype), x)
        return (ds * x - sg * out) / (ds * a - sg * da)
    raise ValueError(f"unknown prediction {prediction!r}; accepted here: {', '.join(PREDICTIONS[:5])} "
                     "('edm' needs its preconditioning: use NetworkDenoiser)")


def prediction_from_x0(prediction: str, x0: Tensor, x: Tensor, t: Tensor, path: Path) -> Tensor:
    """The inverse of :func:`x0_from_prediction` (used to build exact networks and training targets)."""
    a, sg = _coeffs(path, t, x)
    eps = (x - a * x0) / sg
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    if prediction == "v":
        return a * eps - sg * x0
    if prediction == "score":
        return -eps / sg
    if prediction == "velocity":
        da, ds = bc(path.dalpha(t).to(x.dtype), x), bc(path.dsigma(t).to(x.dtype), x)
        return da * x0 + ds * eps
    raise ValueError(f"unknown prediction {prediction!r}; accepted here: {', '.join(PREDICTIONS[:5])} "
                     "('edm' needs its preconditioning: use NetworkDenoiser)")


def edm_preconditioning(s: Tensor, sigma_data: float):
    """EDM Table 1 (VE form, here in canonical space): c_skip, c_out, c_in, c_noise."""
    s2, sd2 = s * s, sigma_data * sigma_data
    c_skip = sd2 / (s2 + sd2)
    c_out = s * sigma_data / torch.sqrt(s2 + sd2)
    c_in = 1 / torch.sqrt(s2 + sd2)
    c_noise = torch.log(s) / 4
    return c_skip, c_out, c_in, c_noise


class NetworkDenoiser(Denoiser):
    """A network ``f(x, t, **cond)`` on ``path`` with a given prediction type, as a Denoiser.

    ``net_dtype`` runs the network in another precision (e.g. ``torch.float32``) while the
    sampler state stays in its own dtype; the output is cast back.
    ``allow_extrapolation`` permits noise levels outside the path's trained range (otherwise
    the driver refuses schedules that leave it).
    """

    def __init__(self, net: Callable[..., Tensor], path: Path | str, prediction: str = "eps", *,
                 sigma_data: float = 0.5, net_dtype: torch.dtype | None = None,
                 allow_extrapolation: bool = False):
        if not callable(net):
            raise TypeError(f"net must be a callable f(x, t, **cond) (e.g. a torch module), got {type(net).__name__}")
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}; accepted: {', '.join(PREDICTIONS)}")
        if net_dtype is not None and (not isinstance(net_dtype, torch.dtype) or not net_dtype.is_floating_point):
            raise TypeError(f"net_dtype must be a floating torch dtype (torch.float32, torch.bfloat16, ...) "
                            f"or None, got {net_dtype!r}")
        check_bool("NetworkDenoiser", "allow_extrapolation", allow_extrapolation)
        self.net, self.path, self.prediction = net, get_path(path), prediction
        self.sigma_data = check_number("NetworkDenoiser", "sigma_data", sigma_data, 0, low_open=True)
        self.net_dtype, self.allow_extrapolation = net_dtype, allow_extrapolation

    def _call_net(self, x: Tensor, t: Tensor, cond: dict) -> Tensor:
        dt = self.net_dtype
        if dt is not None and dt != x.dtype:
            out = self.net(x.to(dt), t.to(dt), **cond)
        else:
            out = self.net(x, t, **cond)
        if not isinstance(out, Tensor) or out.shape != x.shape:
            got = f"shape {tuple(out.shape)}" if isinstance(out, Tensor) else f"a {type(out).__name__}"
            raise ValueError(f"the network returned {got} for an input of shape {tuple(x.shape)}; "
                             f"a {self.prediction!r} network must return a tensor of its input's shape")
        if out.is_complex() or not out.is_floating_point():
            raise TypeError(f"the network returned dtype {out.dtype}; a {self.prediction!r} network must "
                            f"return a real floating tensor (its output is not cast, so that nothing is truncated)")
        return out.to(x.dtype) if out.dtype != x.dtype else out

    def accepted_cond(self) -> frozenset[str] | None:
        """The network's keyword arguments after (x, t) (its ``forward`` for a torch module)."""
        fn = getattr(self.net, "forward", self.net)
        return accepted_keywords(fn, skip=2)

    def __call__(self, y: Tensor, s: Tensor | float, **cond: Any) -> Tensor:
        if isinstance(s, float):  # one level for the whole batch (a solver's grid level): cached constants
            return self._denoise_shared(y, s, cond)
        return super().__call__(y, s, **cond)

    def denoise(self, y, s, **cond):
        if self.prediction == "edm":
            c_skip, c_out, c_in, c_noise = edm_preconditioning(s, self.sigma_data)
            return self._edm(y, bc(c_skip, y), bc(c_out, y), bc(c_in, y), c_noise, cond)
        t, a, sg = self._level(s, y)
        return self._at_time(y, t if t.dtype == y.dtype else t.to(y.dtype), t, a, sg, cond)

    def _edm(self, y: Tensor, c_skip, c_out, c_in, c_noise: Tensor, cond: dict) -> Tensor:
        """EDM's D = c_skip y + c_out F(c_in y, c_noise); coefficients broadcast against y (or floats)."""
        return c_skip * y + c_out * self._call_net(c_in * y, c_noise, cond)

    def _at_time(self, y: Tensor, t_net: Tensor, t: Tensor, a, sg, cond: dict) -> Tensor:
        """D from the network at path time t (``t_net``: t in y's dtype) with alpha(t), sigma(t)."""
        x = a * y
        return x0_from_prediction(self.prediction, self._call_net(x, t_net, cond), x, t, self.path, (a, sg))

    def _denoise_shared(self, y: Tensor, s: float, cond: dict) -> Tensor:
        """``denoise`` at one level s (a Python float) for every row: the network's time input
        (a (B,) tensor on y's device) and the scalar coefficients are built once per level,
        batch size, dtype and device, so a step costs the network call and two or three fused
        tensor operations (measured by ``diffsolve.bench.overhead``)."""
        cache = self.__dict__.setdefault("_shared_cache", {})
        key = (s, y.shape[0], y.dtype, y.device)
        hit = cache.get(key)
        if hit is None:
            if len(cache) >= 4096:
                cache.clear()
            st = torch.full((1,), s, dtype=y.dtype, device=y.device)
            if self.prediction == "edm":
                c_skip, c_out, c_in, c_noise = edm_preconditioning(st.double(), self.sigma_data)
                hit = (c_skip.item(), c_out.item(), c_in.item(), c_noise.to(y.dtype).expand(y.shape[0]))
            else:
                t, a, sg = self._level(st, y[:1])
                t = t.expand(y.shape[0])
                hit = (t if t.dtype == y.dtype else t.to(y.dtype), t, a, sg)
            cache[key] = hit
        if self.prediction == "edm":
            return self._edm(y, *hit, cond)
        return self._at_time(y, *hit, cond)

    def prepare(self, levels: Tensor, dtype: torch.dtype = torch.float64) -> None:
        """Precompute t(s), alpha and sigma at every level of a schedule in one vectorised pass
        (the driver calls this with the grid before the loop; levels s = 0 are skipped)."""
        if self.prediction == "edm":
            return
        values = [v for v in torch.as_tensor(levels, dtype=torch.float64).detach().cpu().tolist() if v > 0]
        cache = self.__dict__.setdefault("_level_cache", {})
        if all((v, dtype) in cache for v in values):
            return  # a repeated grid (sampling batch after batch), or no level > 0: nothing to compute
        if len(cache) + len(values) > 4096:
            cache.clear()
        lv = torch.tensor(values, dtype=torch.float64)
        t = self.path.t_of_s(lv)
        a, sg = self.path.alpha(t).to(dtype), self.path.sigma(t).to(dtype)
        for v, tk, ak, sk in zip(values, t.split(1), a.tolist(), sg.tolist()):
            cache[(v, dtype)] = (tk, ak, sk)  # alpha, sigma as Python floats: broadcast against any y

    def _level(self, s: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Path time t(s) and alpha, sigma (broadcast against y) at the levels s.  When the whole
        batch shares one level on the CPU (the usual case: a solver passes one scalar level,
        expanded), the conversion is done once per level and cached, so that the cost per step
        outside the network is a few tensor operations (measured by ``diffsolve.bench.overhead``)."""
        if s.device.type == "cpu" and (s.numel() == 1 or s.stride(0) == 0):
            cache = self.__dict__.setdefault("_level_cache", {})
            key = (float(s[0]), y.dtype)
            hit = cache.get(key)
            if hit is None:
                t1 = self.path.t_of_s(s[:1])
                a1, sg1 = (v.item() for v in _coeffs(self.path, t1, y[:1]))
                if len(cache) >= 4096:
                    cache.clear()
                hit = cache[key] = (t1, a1, sg1)
            t1, a1, sg1 = hit
            return t1.expand(s.shape[0]), a1, sg1
        t = self.path.t_of_s(s)
        a, sg = _coeffs(self.path, t, y)
        return t, a, sg

    def __repr__(self) -> str:
        return f"NetworkDenoiser(prediction={self.prediction!r}, path={self.path.name!r})"


def from_network(net: Callable[..., Tensor], path: Path | str, prediction: str = "eps", **kw) -> NetworkDenoiser:
    """Adapt a network to a canonical Denoiser. See :class:`NetworkDenoiser`."""
    return NetworkDenoiser(net, path, prediction, **kw)
