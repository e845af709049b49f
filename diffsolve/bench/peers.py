"""Peers: other libraries' samplers run on *our* network, from *our* starting point, with the NFE
counted at the network.

Every adapter receives

* ``net``: the network ``f(x, t)`` of the benchmark (for the exact mixtures, the exact
  eps-prediction network ``gmm.network(path, "eps")`` on a DDPM table), already wrapped in a
  :class:`CountingNet` that counts calls (one call = one evaluation of the whole batch);
* ``den``: the canonical denoiser built from that same counted network with
  :func:`diffsolve.from_network` (k-diffusion and torchdiffeq work in the canonical / VE
  space, where ``D(y, s)`` *is* k-diffusion's denoiser ``model(x, sigma)``);
* ``y0``: our starting state ``y_0 = s_0 * noise`` at the first level ``s_0 = path.s_max``.

and returns the final samples in canonical space (``y = x`` at ``s = 0``).  The starting point is
the same for everybody: VP schedulers of diffusers (DDIM, DPMSolver*, UniPC, DEIS), which work on
``x_t = alpha_t y``, start from ``x_T = alpha(t_0) y_0``; VE-type schedulers (Euler, Heun, LMS) and
k-diffusion start from ``y_0`` itself.  Every adapter checks that its first level is ``s_0`` (all
diffusers peers use ``timestep_spacing="linspace"``, whose first timestep is 999).

Peers are optional: :func:`available` says which libraries import, and the sweep records the
others as skipped.

Example::

    >>> import torch
    >>> from diffsolve.bench.peers import PEERS, run_peer
    >>> sorted({p.lib for p in PEERS.values()})
    ['diffusers', 'k-diffusion', 'torchdiffeq']
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
import types
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from ..denoisers import from_network

__all__ = ["CountingNet", "Peer", "PEERS", "available", "applicable", "run_peer", "load_k_diffusion_sampling", "peer_feasible"]

F64 = torch.float64


class CountingNet:
    """Wrap a network ``f(x, t, **cond)``: counts calls, passes ``t`` as a float64 vector."""

    def __init__(self, net: Callable[..., Tensor]):
        self.net, self.calls = net, 0

    def __call__(self, x: Tensor, t: Tensor | float, **cond: Any) -> Tensor:
        self.calls += 1
        t = torch.as_tensor(t).to(F64).reshape(-1)
        if t.numel() == 1:
            t = t.expand(x.shape[0])
        return self.net(x, t, **cond)


@dataclass(frozen=True)
class Peer:
    """One peer configuration.

    lib / label: the library and a readable name (with its options).
    kind: ``"fixed"`` (the NFE follows from the step count by ``nfe_rule``), ``"adaptive"``
    (a tolerance decides; the NFE is counted) or ``"stochastic"`` (an SDE sampler: reported
    with distribution metrics, not against the ODE reference).
    run: ``run(net, den, path, y0, budget, seed) -> samples``; ``budget`` is the NFE for fixed
    and stochastic peers and the relative tolerance for adaptive ones.
    feasible: ``feasible(nfe) -> bool`` for fixed/stochastic peers.
    """

    lib: str
    label: str
    kind: str
    run: Callable[..., Tensor] = field(repr=False, compare=False)
    feasible: Callable[[int], bool] = field(default=lambda n: n >= 1, repr=False, compare=False)
    nfe_rule: str = "1 per step"

    @property
    def key(self) -> str:
        return f"{self.lib}:{self.label}"


# --------------------------------------------------------------------------------------
# diffusers
# --------------------------------------------------------------------------------------

_VE_SCHEDULERS = ("EulerDiscreteScheduler", "HeunDiscreteScheduler", "LMSDiscreteScheduler")


def _diffusers_scheduler(cls_name: str, path, **options):
    import diffusers

    betas = getattr(path, "betas", None)
    if betas is None:
        raise ValueError(f"diffusers peers need a DDPM table path (ddpm-*), got {path.name!r}")
    cls = getattr(diffusers, cls_name)
    kw = dict(num_train_timesteps=betas.numel(), trained_betas=betas.tolist(), prediction_type="epsilon")
    if cls_name != "DPMSolverSinglestepScheduler":  # it has no such option (its grid is linspace already)
        kw["timestep_spacing"] = "linspace"
    if cls_name == "DDIMScheduler":
        kw.update(clip_sample=False, set_alpha_to_one=True)
    kw.update(options)
    return cls(**kw)


def _run_diffusers(cls_name: str, steps_of_nfe: Callable[[int], int], denoise_final: bool = False, **options):
    """``denoise_final``: the scheduler stops at s_min (``final_sigmas_type="sigma_min"``) and one
    more evaluation denoises to s = 0 (the budget is shared: nfe - 1 scheduler steps)."""

    def run(net, den, path, y0, nfe, seed):
        sch = _diffusers_scheduler(cls_name, path, **options)
        sch.set_timesteps(steps_of_nfe(nfe - 1 if denoise_final else nfe))
        s0 = path.s_max
        ve = cls_name in _VE_SCHEDULERS
        if ve:
            first = float(sch.sigmas[0])
            if abs(first / s0 - 1) > 1e-5:
                raise RuntimeError(f"{cls_name} starts at sigma={first}, not at the reference's s_0={s0}")
            x = y0.clone()
        else:
            t0 = float(sch.timesteps[0])
            if abs(float(path.s(torch.tensor(t0, dtype=F64))) / s0 - 1) > 1e-9:
                raise RuntimeError(f"{cls_name} starts at t={t0}, not at the reference's t_max={path.t_max}")
            x = y0 * path.alpha(torch.tensor(t0, dtype=F64)).to(y0.dtype)  # x_T = alpha(t_0) y_0
        kw = {}
        if "sde" in str(options.get("algorithm_type", "")):
            kw["generator"] = torch.Generator().manual_seed(int(seed))
        for t in sch.timesteps:
            eps = net(sch.scale_model_input(x, t), t)
            x = sch.step(eps, t, x, **kw).prev_sample
        if denoise_final:  # x is at t = 0 (alpha(0) x0 + sigma(0) eps): one more call denoises it
            t_end = torch.tensor(path.t_min, dtype=F64)
            return den(x / path.alpha(t_end).to(x.dtype), path.s_min).to(y0.dtype)
        return x.to(y0.dtype)

    return run


def _steps_same(nfe: int) -> int:
    return nfe


def _steps_heun(nfe: int) -> int:
    return (nfe + 1) // 2


def _odd(n: int) -> bool:
    return n >= 1 and n % 2 == 1


# --------------------------------------------------------------------------------------
# k-diffusion (installed without its dependencies)
# --------------------------------------------------------------------------------------

class _Stub(types.ModuleType):
    """A stand-in for a package that k-diffusion imports at top level but that the sampling
    functions we call never use; touching it raises."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise ImportError(f"{self.__name__}.{name} is a stub inserted by diffsolve.bench.peers: the real "
                          f"package is not installed (only k_diffusion.sampling's ODE samplers are supported)")


_KD_CACHE: dict[str, Any] = {}


def load_k_diffusion_sampling():
    """``k_diffusion.sampling`` loaded without running ``k_diffusion/__init__`` (which imports
    training, augmentation and evaluation code and their dependencies).  The top-level imports
    that the sampling module does not need are stubbed for the duration of the import only
    (``torchsde``, used by the SDE samplers' Brownian tree; ``torchvision``, used by the image
    utilities); the stubs are removed from ``sys.modules`` afterwards."""
    if "mod" in _KD_CACHE:
        return _KD_CACHE["mod"]
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("k-diffusion is not installed (pip install k-diffusion --no-deps)")
    pkg_dir = list(spec.submodule_search_locations)[0]
    pkg_name = "_diffsolve_k_diffusion"
    pkg = types.ModuleType(pkg_name)
    pkg.__path__ = [pkg_dir]
    inserted = []
    stubs = {"torchsde": None, "torchvision": None, "torchvision.transforms": None,
             "torchvision.transforms.functional": None}
    for name in stubs:
        try:
            if name not in sys.modules and importlib.util.find_spec(name.split(".")[0]) is not None:
                continue  # the real package exists: let the import use it
        except (ImportError, ValueError):
            pass
        if name not in sys.modules:
            sys.modules[name] = _Stub(name)
            inserted.append(name)
    if "torchvision.transforms" in inserted:
        sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]  # type: ignore[attr-defined]
        sys.modules["torchvision.transforms"].functional = sys.modules["torchvision.transforms.functional"]  # type: ignore[attr-defined]
    try:
        sys.modules[pkg_name] = pkg
        mod = importlib.import_module(pkg_name + ".sampling")
    finally:
        for name in inserted:
            sys.modules.pop(name, None)
    _KD_CACHE["mod"] = mod
    return mod


class _KModel:
    """k-diffusion's model interface ``model(x, sigma)`` -> denoised, on our denoiser."""

    def __init__(self, den):
        self.den = den

    def __call__(self, x, sigma, **kw):
        return self.den(x, sigma.to(x.dtype), **kw)


def _kd_sigmas(kind: str, n: int, path) -> Tensor:
    kd = load_k_diffusion_sampling()
    s_min, s_max = path.s_min, path.s_max
    if kind == "karras":
        sig = kd.get_sigmas_karras(n, s_min, s_max)
    elif kind == "exponential":
        sig = kd.get_sigmas_exponential(n, s_min, s_max)
    else:  # pragma: no cover - guarded by the table below
        raise ValueError(kind)
    sig = sig.to(F64)
    sig[0], sig[n - 1] = s_max, s_min  # k-diffusion builds the grid in float32; pin its ends
    return sig


def _run_kd(fn_name: str, sigmas: str, steps_of_nfe: Callable[[int], int]):
    def run(net, den, path, y0, nfe, seed):
        kd = load_k_diffusion_sampling()
        sig = _kd_sigmas(sigmas, steps_of_nfe(nfe), path)
        return getattr(kd, fn_name)(_KModel(den), y0.clone(), sig, disable=True)

    return run


def _run_kd_fast(net, den, path, y0, nfe, seed):
    """dpm_fast integrates to s_min with nfe - 1 evaluations; one more denoises to s = 0."""
    kd = load_k_diffusion_sampling()
    x = kd.sample_dpm_fast(_KModel(den), y0.clone(), path.s_min, path.s_max, nfe - 1, disable=True)
    return den(x, path.s_min)


def _run_kd_adaptive(net, den, path, y0, rtol, seed):
    kd = load_k_diffusion_sampling()
    x = kd.sample_dpm_adaptive(_KModel(den), y0.clone(), path.s_min, path.s_max, rtol=rtol, atol=rtol / 10,
                               disable=True)
    return den(x, path.s_min)


# --------------------------------------------------------------------------------------
# torchdiffeq: the probability-flow ODE in lambda, dy/dlambda = D(y, e^-lambda) - y
# --------------------------------------------------------------------------------------

def lambda_ode(den):
    def f(lam, y):
        return den(y, torch.exp(-lam).to(y.dtype)) - y
    return f


def _run_tde_rk4(net, den, path, y0, nfe, seed):
    from torchdiffeq import odeint

    n = (nfe - 1) // 4
    lam = torch.linspace(-math.log(path.s_max), -math.log(path.s_min), n + 1, dtype=F64)
    y = odeint(lambda_ode(den), y0, lam, method="rk4")[-1]
    return den(y, path.s_min)


def dopri5_to_s_min(den, path, y0, rtol: float, atol: float | None = None) -> Tensor:
    """Adaptive Dormand-Prince (torchdiffeq) from s_max to s_min in lambda."""
    from torchdiffeq import odeint

    lam = torch.tensor([-math.log(path.s_max), -math.log(path.s_min)], dtype=F64)
    return odeint(lambda_ode(den), y0, lam, method="dopri5", rtol=rtol, atol=rtol if atol is None else atol)[-1]


def _run_tde_dopri5(net, den, path, y0, rtol, seed):
    return den(dopri5_to_s_min(den, path, y0, rtol, rtol / 10), path.s_min)


# --------------------------------------------------------------------------------------
# the table of peers
# --------------------------------------------------------------------------------------

def _build() -> dict[str, Peer]:
    P: list[Peer] = []

    def dfs(label, cls, steps=_steps_same, feasible=lambda n: n >= 1, kind="fixed", rule="1 per step", **opt):
        P.append(Peer("diffusers", label, kind, _run_diffusers(cls, steps, **opt), feasible, rule))

    dfs("DDIM", "DDIMScheduler")
    for order in (2, 3):
        dfs(f"DPMSolverMultistep(order={order})", "DPMSolverMultistepScheduler", solver_order=order)
        dfs(f"DPMSolverMultistep(order={order},karras)", "DPMSolverMultistepScheduler", solver_order=order,
            use_karras_sigmas=True)
        dfs(f"DPMSolverSinglestep(order={order})", "DPMSolverSinglestepScheduler", solver_order=order)
        dfs(f"DEIS(order={order})", "DEISMultistepScheduler", solver_order=order)
        for bh in ("bh1", "bh2"):
            dfs(f"UniPC({bh},order={order})", "UniPCMultistepScheduler", solver_order=order, solver_type=bh)
    for order in (2, 3):  # diffusers' bh1 divides by h = inf on a final step to sigma = 0 (NaN);
        # this variant stops at sigma_min and denoises with one more evaluation
        dfs(f"UniPC(bh1,order={order},sigma_min+denoise)", "UniPCMultistepScheduler", solver_order=order,
            solver_type="bh1", final_sigmas_type="sigma_min", denoise_final=True, feasible=lambda n: n >= 2,
            rule="nfe - 1 steps to s_min, then 1 to denoise")
    dfs("UniPC(bh2,order=3,karras)", "UniPCMultistepScheduler", solver_order=3, solver_type="bh2",
        use_karras_sigmas=True)
    dfs("DPMSolverMultistep(sde-dpmsolver++,order=2)", "DPMSolverMultistepScheduler", kind="stochastic",
        solver_order=2, algorithm_type="sde-dpmsolver++")
    for karras in (False, True):
        sfx = ",karras" if karras else ""
        opt = {"use_karras_sigmas": True} if karras else {}
        dfs(f"Euler({sfx[1:]})".replace("()", ""), "EulerDiscreteScheduler", **opt)
        dfs(f"Heun({sfx[1:]})".replace("()", ""), "HeunDiscreteScheduler", steps=_steps_heun, feasible=_odd,
            rule="2 per step, 1 for the last (2N-1)", **opt)
        dfs(f"LMS({sfx[1:]})".replace("()", ""), "LMSDiscreteScheduler", **opt)

    for fn, sig in (("sample_euler", "karras"), ("sample_lms", "karras"), ("sample_dpmpp_2m", "karras"),
                    ("sample_dpmpp_2m", "exponential")):
        P.append(Peer("k-diffusion", f"{fn.removeprefix('sample_')}({sig})", "fixed", _run_kd(fn, sig, _steps_same)))
    for fn in ("sample_heun", "sample_dpm_2"):
        P.append(Peer("k-diffusion", f"{fn.removeprefix('sample_')}(karras)", "fixed",
                      _run_kd(fn, "karras", _steps_heun), _odd, "2 per step, 1 for the last (2N-1)"))
    P.append(Peer("k-diffusion", "dpm_fast", "fixed", _run_kd_fast, lambda n: n >= 2,
                  "nfe - 1 to s_min, then 1 to denoise"))
    P.append(Peer("k-diffusion", "dpm_adaptive", "adaptive", _run_kd_adaptive, nfe_rule="adaptive (rtol)"))
    P.append(Peer("torchdiffeq", "rk4(lambda)", "fixed", _run_tde_rk4, lambda n: n >= 5 and (n - 1) % 4 == 0,
                  "4 per step + 1 to denoise (4N+1)"))
    P.append(Peer("torchdiffeq", "dopri5(lambda)", "adaptive", _run_tde_dopri5, nfe_rule="adaptive (rtol)"))
    return {p.key: p for p in P}


PEERS: dict[str, Peer] = _build()

_LIB_MODULES = {"diffusers": "diffusers", "k-diffusion": "k_diffusion", "torchdiffeq": "torchdiffeq"}


def available(lib: str) -> str | None:
    """None if the library's peers can run, else the reason they are skipped."""
    mod = _LIB_MODULES[lib]
    try:
        if lib == "k-diffusion":
            load_k_diffusion_sampling()
            importlib.import_module("torchdiffeq")  # k_diffusion.sampling imports it
        else:
            importlib.import_module(mod)
    except Exception as e:  # ImportError and friends from a broken install
        return f"{lib} not usable: {type(e).__name__}: {e}"
    return None


def peer_feasible(peer: Peer, nfe: int) -> bool:
    return peer.kind != "adaptive" and bool(peer.feasible(nfe))


def applicable(key: str, path, prediction: str) -> str | None:
    """None if peer ``key`` can run a ``prediction`` network on ``path``, else why not: diffusers'
    schedulers are built here for eps networks on a DDPM table (k-diffusion and torchdiffeq run
    on the canonical denoiser, so on any path and prediction)."""
    if PEERS[key].lib == "diffusers" and (getattr(path, "betas", None) is None or prediction != "eps"):
        return f"diffusers peers run eps networks on DDPM tables; this model is {prediction!r} on {path.name!r}"
    return None


def run_peer(key: str, net: Callable[..., Tensor], path, y0: Tensor, budget, seed: int = 0,
             prediction: str = "eps") -> tuple[Tensor, int]:
    """Run one peer from ``y0`` on ``net`` (a ``prediction`` network on ``path``); returns
    (samples, NFE counted at the network)."""
    if key not in PEERS:
        raise ValueError(f"unknown peer {key!r}; accepted: {', '.join(PEERS)}")
    why = applicable(key, path, prediction)
    if why is not None:
        raise ValueError(why)
    peer = PEERS[key]
    cnet = CountingNet(net)
    den = from_network(cnet, path, prediction)
    with torch.no_grad():
        out = peer.run(cnet, den, path, y0, budget, seed)
    return out, cnet.calls
