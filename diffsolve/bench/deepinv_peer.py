"""The deepinv peer for the inverse-problem benchmark: deepinv's DPS, DDRM and DiffPIR run on *our*
prior, with every network call counted at the network.

Conventions (read from deepinv 0.5.0's source):

* deepinv's denoisers take ``denoiser(x, sigma)`` with ``x = x0 + sigma n``, ``x0`` in [0, 1] and
  ``sigma`` in [0, 1] units (variance exploding; its VP samplers divide by the scale first, and
  DPS / DiffPIR carry their state in [-1, 1] and map it to [0, 1] before calling the denoiser).
  Our prior ``D(y, s)`` works on data in ``data_range`` (the shipped image models: [-1, 1]).
  With ``c = hi - lo``: ``y = lo + c x``, ``s = c sigma`` and ``D01(x, sigma) = (D(y, s) - lo) / c``.
* A measurement of ours ``y = A x + sigma_y n`` (model units) is, on ``x01 = (x - lo) / c``,
  ``y01 = (y - lo A 1) / c = A x01 + (sigma_y / c) n``: the same operator, with ``sigma_y / c``
  (0.1 in [-1, 1] units is deepinv's 0.05). deepinv's ``Inpainting`` keeps the image shape (zeros
  where missing), so our flat measurement is zero-filled (our adjoint).
* Levels outside the prior's trained range [s_min, s_max] are clamped into it and counted
  (``info["clamped"]``; DiffPIR starts at s ~ 152 in [-1, 1] units, above EDM's 80); a call at
  ``sigma = 0`` (DDRM's last level) returns its input, the exact limit ``D(y, 0) = y``, without a
  network call (``info["identity"]``).
* deepinv draws its noise from one generator for the whole batch: a run is seeded with the first
  of ``seeds`` (the global RNG is restored afterwards); DPS starts from our per-sample noise
  (``NoiseSource.initial(seeds)``), DDRM and DiffPIR draw their own start.

deepinv imports torchvision at start-up (no working wheel here): :func:`load_deepinv` imports it
with a stub ``torchvision`` package in place for the duration of the import only; anything that
really uses torchvision (datasets, plotting, training) raises ImportError naming the stub.

    >>> from diffsolve.bench.deepinv_peer import DEEPINV_METHODS, default_steps
    >>> DEEPINV_METHODS, default_steps("dps"), default_steps("ddrm"), default_steps("diffpir")
    (('dps', 'ddrm', 'diffpir'), 1998, 99, 100)
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import math
import sys
import time
import types
from typing import Any, Sequence

import torch
from torch import Tensor

from ..checks import check_choice
from ..denoisers import as_denoiser
from ..inverse import Denoising, GaussianBlur, Inpainting, LinearOperator, Operator, SuperResolution
from ..noise import NoiseSource
from ..validate import check_cond, check_nfe

__all__ = ["DEEPINV_METHODS", "deepinv_available", "load_deepinv", "DeepinvDenoiser", "to_deepinv_physics",
           "default_steps", "run_deepinv"]

DEEPINV_METHODS = ("dps", "ddrm", "diffpir")

#: network calls each method makes at deepinv's default settings, a VJP counting as one call as in
#: :func:`diffsolve.inverse.solve_inverse` (DPS: 1000 time steps, 999 steps of a forward call and
#: a VJP each, none at t = 0; DDRM: 100 levels linspace(1, 0), the last at sigma = 0 is the
#: identity; DiffPIR: max_iter = 100)
_DEFAULT_NFE = {"dps": 2 * 999, "ddrm": 99, "diffpir": 100}


def default_steps(method: str) -> int:
    """The network calls deepinv's ``method`` makes at its own defaults."""
    return _DEFAULT_NFE[check_choice("deepinv peer", "method", method, DEEPINV_METHODS)]


# --------------------------------------------------------------------------------------
# importing deepinv without torchvision
# --------------------------------------------------------------------------------------

class _StubMeta(type):
    """Placeholder classes for torchvision names: attribute access gives more placeholders
    (``InterpolationMode.BILINEAR`` in a default argument), use raises ImportError."""

    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder(f"{cls.__qualname__}.{name}")

    def __call__(cls, *args, **kwargs):
        raise ImportError(f"{cls.__qualname__} is a stub inserted by diffsolve.bench.deepinv_peer: torchvision "
                          f"is not installed (deepinv's datasets, plotting and training need it)")


def _placeholder(name: str) -> type:
    return _StubMeta(name, (), {"__qualname__": name})


class _TorchvisionStub(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves ``torchvision`` and every ``torchvision.*`` as an empty package of placeholders."""

    def find_spec(self, name, path, target=None):
        if name == "torchvision" or name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        mod = types.ModuleType(spec.name)
        mod.__path__ = []

        def __getattr__(attr, _owner=spec.name):
            if attr.startswith("__"):
                raise AttributeError(attr)
            return _placeholder(f"{_owner}.{attr}")

        mod.__getattr__ = __getattr__  # type: ignore[attr-defined]
        return mod

    def exec_module(self, module):
        pass


_CACHE: dict[str, Any] = {}


def deepinv_available() -> bool:
    """Whether deepinv is installed (its import is not attempted)."""
    return importlib.util.find_spec("deepinv") is not None


def load_deepinv():
    """``import deepinv`` with a stub torchvision where the real one is missing; the stub modules
    are removed from ``sys.modules`` afterwards (deepinv keeps its references to them)."""
    if "mod" in _CACHE:
        return _CACHE["mod"]
    if not deepinv_available():
        raise ImportError("deepinv is not installed: pip install --no-deps deepinv natsort h5py")
    stub = None
    if "torchvision" not in sys.modules and importlib.util.find_spec("torchvision") is None:
        stub = _TorchvisionStub()
        sys.meta_path.insert(0, stub)
    try:
        mod = importlib.import_module("deepinv")
    finally:
        if stub is not None:
            sys.meta_path.remove(stub)
            for name in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
                if isinstance(sys.modules[name].__spec__.loader, _TorchvisionStub):
                    del sys.modules[name]
    _CACHE["mod"] = mod
    return mod


# --------------------------------------------------------------------------------------
# our prior as a deepinv denoiser
# --------------------------------------------------------------------------------------

class DeepinvDenoiser(torch.nn.Module):
    """Our prior as deepinv's ``denoiser(x, sigma)`` (x in [0, 1], VE ``sigma`` in [0, 1] units),
    counting network calls (``calls``), the calls a gradient flowed back through (``vjp``, by a
    hook on the output), clamped levels (``clamped``) and the sigma = 0 calls answered exactly
    (``identity``)."""

    def __init__(self, prior, cond: dict[str, Any] | None = None, data_range: tuple[float, float] = (-1.0, 1.0),
                 out_of_range: str = "clamp"):
        super().__init__()
        self.prior = as_denoiser(prior)
        self.cond = dict(cond or {})
        lo, hi = (float(v) for v in data_range)
        if not hi > lo:
            raise ValueError(f"data_range must be (low, high) with high > low, got {data_range!r}")
        self.lo, self.c = lo, hi - lo
        self.out_of_range = check_choice("DeepinvDenoiser", "out_of_range", out_of_range, ("clamp", "extrapolate"))
        self.calls = self.vjp = self.clamped = self.identity = 0

    def _levels(self, sigma, x: Tensor) -> Tensor:
        s = torch.as_tensor(sigma, dtype=torch.float64).detach().cpu().reshape(-1) * self.c
        if s.numel() not in (1, x.shape[0]):
            raise ValueError(f"sigma has {s.numel()} entries for a batch of {x.shape[0]}")
        return s

    def forward(self, x: Tensor, sigma, *args, **kwargs) -> Tensor:
        s = self._levels(sigma, x)
        if bool((s == 0).all()):
            self.identity += 1
            return x
        rng = self.prior.s_range
        if rng is not None:
            out = (s < rng[0]) | (s > rng[1])
            if bool(out.any()) and self.out_of_range == "clamp":
                self.clamped += 1
                s = s.clamp(*rng)
        y = self.lo + self.c * x
        level: Tensor | float = float(s[0]) if bool((s == s[0]).all()) else s.to(x.dtype)
        self.calls += 1
        d = self.prior(y, level, **self.cond)
        if d.requires_grad:
            d.register_hook(self._count_vjp)
        return (d - self.lo) / self.c

    def _count_vjp(self, grad: Tensor) -> Tensor:
        self.vjp += 1
        return grad


# --------------------------------------------------------------------------------------
# our operators as deepinv physics
# --------------------------------------------------------------------------------------

def _image_size(op: Operator) -> tuple[int, ...]:
    shape = tuple(op.in_shape)
    return shape if len(shape) == 3 else (1, *shape[-2:]) if len(shape) == 2 else shape


def _svd_physics(dinv, op: Operator):
    """A deepinv DecomposablePhysics from our operator's SVD (for DDRM where deepinv's own physics
    has none, e.g. super-resolution): spectral coordinates padded to the image size, singular
    values (zeros beyond the rank) as its ``mask``."""
    s = op.require_svd("deepinv ddrm")
    shape, n, r = tuple(op.in_shape), math.prod(op.in_shape), s.rank

    def pad(z):
        out = z.new_zeros(z.shape[0], n)
        out[:, :r] = z
        return out.reshape(z.shape[0], *shape)

    mask = pad(s.sv[None].float())
    return dinv.physics.DecomposablePhysics(
        U=lambda z: s.U(z.reshape(z.shape[0], n)[:, :r]), U_adjoint=lambda y: pad(s.Ut(y)),
        V=lambda z: s.V(z.reshape(z.shape[0], n)), V_adjoint=lambda x: s.Vt(x).reshape(x.shape[0], *shape),
        mask=mask)


def to_deepinv_physics(op: Operator, sigma01: float, decomposable: bool = False):
    """``(physics, embed)``: deepinv's own physics for our operator with Gaussian noise
    ``sigma01`` (in deepinv's [0, 1] units), and ``embed(y01)`` mapping a measurement of ours
    (already in [0, 1] units, our shape) to deepinv's (Inpainting: zero-filled image).
    ``decomposable``: a physics with an SVD (DDRM); super-resolution and dense matrices then get
    one built from our SVD (deepinv's Downsampling has none)."""
    dinv = load_deepinv()
    noise = dinv.physics.GaussianNoise(sigma=float(sigma01))
    same = lambda y: y  # noqa: E731
    if isinstance(op, Inpainting):
        phys = dinv.physics.Inpainting(img_size=tuple(op.in_shape), mask=op.mask.float())
        embed = op.adjoint
    elif isinstance(op, Denoising):
        phys, embed = dinv.physics.Denoising(), same
    elif isinstance(op, GaussianBlur):
        phys, embed = dinv.physics.BlurFFT(img_size=_image_size(op), filter=op.kernel[None, None].float()), same
    elif isinstance(op, SuperResolution) and not decomposable:
        f = op.factor
        box = torch.full((1, 1, f, f), 1.0 / f**2)
        # "valid": the f x f box at stride f is exactly our block mean (deepinv's "circular"
        # adjoint fails for even filters, "reflect" shifts the blocks for f > 2)
        phys = dinv.physics.Downsampling(img_size=_image_size(op), filter=box, factor=f, padding="valid")
        embed = same
    elif isinstance(op, (SuperResolution, LinearOperator)):
        if decomposable or isinstance(op, SuperResolution):
            return _with_noise(_svd_physics(dinv, op), noise), same
        phys = dinv.physics.LinearPhysics(A=op.forward, A_adjoint=op.adjoint)
        embed = same
    else:
        raise ValueError(f"no deepinv physics for the operator {op!r}; accepted: Inpainting, Denoising, "
                         f"GaussianBlur, SuperResolution, LinearOperator")
    return _with_noise(phys, noise), embed


def _with_noise(phys, noise):
    phys.noise_model = noise
    return phys


# --------------------------------------------------------------------------------------
# one run
# --------------------------------------------------------------------------------------

def _build(dinv, method: str, den: DeepinvDenoiser, nfe: int | None, sigma01: float, seed: int, options: dict):
    if method == "dps":
        kw = dict(options)
        if nfe is not None:
            if nfe % 2:
                raise ValueError(f"deepinv's DPS spends 2 calls per step (a forward call and a VJP): nfe must be "
                                 f"even, got {nfe}")
            kw["num_steps"] = nfe // 2 + 1  # num_steps levels from t = 1 to 0: a call and a VJP per step, none at t = 0
        kw.setdefault("rng", torch.Generator().manual_seed(seed))
        return dinv.sampling.DPS(den, **kw)
    if method == "ddrm":
        kw = dict(options)
        if nfe is not None:
            import numpy as np
            kw["sigmas"] = np.linspace(1, 0, nfe + 1)  # the last level, sigma = 0, costs no call
        return dinv.sampling.DDRM(den, **kw)
    kw = dict(options)
    if nfe is not None:
        kw["max_iter"] = nfe
    return dinv.sampling.DiffPIR(den, dinv.optim.data_fidelity.L2(), sigma=sigma01, **kw)


def run_deepinv(method: str, prior, operator: Operator, y: Tensor, sigma_y: float, nfe: int | None = None,
                seeds: Sequence[int] | None = None, cond: dict[str, Any] | None = None, *,
                data_range: tuple[float, float] = (-1.0, 1.0), out_of_range: str = "clamp",
                **options: Any) -> dict[str, Any]:
    """Run deepinv's ``method`` ("dps", "ddrm" or "diffpir") on our ``prior`` for the measurement
    ``y = A x + sigma_y n`` of our ``operator``, in the same units as
    :func:`diffsolve.inverse.solve_inverse` (``y`` and ``sigma_y`` in the prior's data units,
    ``data_range``; samples returned in them).

    ``nfe``: network calls to spend, a VJP counting as one (DPS: ``num_steps = nfe / 2 + 1``, a
    forward call and a VJP per step, nfe even; DDRM:
    ``sigmas = linspace(1, 0, nfe + 1)``; DiffPIR: ``max_iter = nfe``); None: deepinv's defaults
    (:func:`default_steps`). ``seeds``: one per sample (default 0..B-1; see the module note on
    deepinv's batch-level noise). ``options`` go to deepinv's constructor.

    Returns ``dict(samples, nfe, vjp, seconds, info)``: ``nfe`` is counted at the network (forward
    calls plus VJPs, each one call, as ``solve_inverse`` counts), ``vjp`` the VJPs among them,
    ``seconds`` the wall time of deepinv's call; ``info["calls"]`` the forward calls."""
    method = check_choice("run_deepinv", "method", method, DEEPINV_METHODS)
    dinv = load_deepinv()
    nfe = check_nfe(nfe)
    if not isinstance(operator, Operator):
        raise TypeError(f"operator must be a diffsolve.inverse.Operator, got {type(operator).__name__}")
    shape = tuple(getattr(as_denoiser(prior), "shape", None) or operator.in_shape)
    if tuple(operator.in_shape) != shape:
        raise ValueError(f"the operator takes inputs of shape {tuple(operator.in_shape)}, the prior makes {shape}")
    if len(shape) != 3:
        raise ValueError(f"deepinv's samplers take images (C, H, W); the prior's samples have shape {shape}")
    if not isinstance(y, Tensor) or tuple(y.shape[1:]) != tuple(operator.out_shape):
        raise ValueError(f"y must have shape (batch, {', '.join(map(str, operator.out_shape))}), "
                         f"got {tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__}")
    if not (isinstance(sigma_y, (int, float)) and math.isfinite(sigma_y) and sigma_y >= 0):
        raise ValueError(f"sigma_y must be a finite number >= 0 (the prior's data units), got {sigma_y!r}")
    n = len(seeds) if seeds is not None else y.shape[0]
    seeds = list(range(n)) if seeds is None else [int(v) for v in seeds]
    if y.shape[0] not in (1, n):
        raise ValueError(f"y has {y.shape[0]} rows for {n} seeds: give one measurement, or one per seed")
    y = y.expand(n, *y.shape[1:]) if y.shape[0] == 1 else y

    lo, c = float(data_range[0]), float(data_range[1]) - float(data_range[0])
    den = DeepinvDenoiser(prior, check_cond(cond), data_range, out_of_range)
    sigma01 = float(sigma_y) / c
    phys, embed = to_deepinv_physics(operator, sigma01, decomposable=(method == "ddrm"))
    ones = torch.ones(1, *shape, dtype=torch.float64)
    y01 = embed(((y.double() - lo * operator.forward(ones)) / c)).float()
    model = _build(dinv, method, den, nfe, sigma01, seeds[0], options)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeds[0])
        t0 = time.perf_counter()
        if method == "dps":
            noise = NoiseSource.initial(seeds, shape).to(torch.float64)
            x_init = noise * model.sde.sigma_t(1.0) * model.sde.scale_t(1.0)
            x01 = model(y01, phys, x_init=x_init)
        else:
            x01 = model(y01, phys)
        seconds = time.perf_counter() - t0
    samples = (lo + c * x01.detach().to(torch.float64))
    info = dict(method=f"deepinv:{method}", operator=repr(operator), sigma_y=float(sigma_y), sigma01=sigma01,
                steps="default" if nfe is None else nfe, calls=den.calls, clamped=den.clamped,
                identity=den.identity, seed=seeds[0])
    return dict(samples=samples, nfe=den.calls + den.vjp, vjp=den.vjp, seconds=seconds, info=info)
