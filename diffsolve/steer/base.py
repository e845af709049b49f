"""The steering contract, its registry and the one call ``diffsolve.steer``.

A steering method is a class with ``name``, ``paper``, ``cost``, ``needs`` (``"grad"``: the
reward's gradient, ``"stochastic"``: a stochastic base sampler) and ``exact`` (consistent for
the tilted target as particles grow), options validated in ``__init__``, and

    run(prior, reward, *, num, particles, nfe, lam, seeds, cond, progress) -> SampleResult

returning ``num`` samples in data space.  ``res.nfe`` counts every network evaluation made
for the result, per returned sample: particles, candidates, rollouts and vector-Jacobian
products included (a VJP counts as one call; ``res.info["vjp"]`` says how many); it is what
the driver and the wrappers counted, never estimated.  ``res.info["reward"]`` holds the
returned samples' rewards and ``res.info["reward_calls"]`` how many reward evaluations (rows)
the method made.
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import torch
from torch import Tensor

from ..checks import check_int, check_number
from ..denoisers import Denoiser, as_denoiser
from ..noise import check_seeds
from ..registry import Registry
from ..rewards import FunctionReward, Linear, Reward, as_reward
from ..sample import SampleResult
from ..solvers import get_solver
from ..validate import check_cond, check_nfe

__all__ = ["SteerMethod", "register", "get_method", "list_methods", "steer", "repeat_cond",
           "check_stochastic", "check_deterministic", "METHODS"]

REGISTRY = Registry("steering")
METHODS = REGISTRY.classes
register = REGISTRY.register


class SteerMethod:
    """Base class of steering methods (see the module docstring)."""

    name: ClassVar[str] = "method"
    paper: ClassVar[str] = ""
    cost: ClassVar[str] = ""
    needs: ClassVar[tuple[str, ...]] = ()
    exact: ClassVar[bool] = False

    def run(self, prior: Denoiser, reward: Reward, *, num: int, particles: int, nfe: int, lam: float,
            seeds: list[int], cond: dict[str, Any], progress: bool = False) -> SampleResult:  # pragma: no cover
        raise NotImplementedError


def get_method(name: str | SteerMethod, **options: Any) -> SteerMethod:
    """A steering method by name with its options (see :func:`list_methods`)."""
    return REGISTRY.get(name, SteerMethod, **options)


def list_methods() -> list[dict[str, Any]]:
    """Every steering method with its paper, cost, needs and exactness."""
    return REGISTRY.describe()


def repeat_cond(cond: dict[str, Any], num: int, K: int) -> dict[str, Any]:
    """The prior's conditioning for ``num * K`` rows: per-sample tensors repeated K times each."""
    return {k: v.repeat_interleave(K, 0) if isinstance(v, Tensor) and v.ndim and v.shape[0] == num else v
            for k, v in cond.items()}


def _check_kind(owner: str, solver: str, stochastic: bool, why: str, hint: str = "") -> str:
    """``solver`` if its kind (stochastic or deterministic) is the one ``owner`` needs, else a
    ValueError saying ``why`` and naming the solvers of the right kind (adaptive ones excluded
    from the deterministic list: a fixed budget is needed)."""
    if get_solver(solver).stochastic != stochastic:
        from ..solvers import list_solvers

        ok = ", ".join(r["name"] for r in list_solvers()
                       if r["stochastic"] == stochastic and "adaptive" not in r["nfe"])
        have, need = ("deterministic", "stochastic") if stochastic else ("stochastic", "deterministic")
        raise ValueError(f"{owner}: solver={solver!r} is {have}, {why}; accepted: a {need} solver ({ok}){hint}")
    return solver


def check_stochastic(owner: str, solver: str) -> str:
    """Particle methods need fresh noise in every transition: a deterministic solver would
    make resampled copies identical forever; refuse it, naming the stochastic ones."""
    return _check_kind(owner, solver, True, "so resampled particles would stay copies of each other")


def check_deterministic(owner: str, solver: str, why: str = "so the sample is not a function of the noise searched",
                        hint: str = "; for best-of-N over a stochastic sampler use method 'best-of-n'") -> str:
    """Noise searches [Ma et al. 2025, Sec. 3.1] search over the ODE sampler's starting noise
    (or re-noised states), and FlowChef steers one ODE trajectory: the sample must be a function
    of the noise, so a stochastic solver, whose later noise the method does not see, is refused,
    naming the deterministic ones."""
    return _check_kind(owner, solver, False, why, hint)


REWARD_NAMES = ("class:N", "linear:A1,A2,...", "brightness")


def _brightness(x0: Tensor) -> Tensor:
    """The mean value of a sample's coordinates (for images: ink mass, up to an affine map)."""
    return x0.flatten(1).mean(1)


def named_reward(name: str, prior: Denoiser) -> Reward:
    """Built-in rewards by name: ``"class:N"`` (log p(N | x0) from the shipped steering
    classifier of the prior's dataset: never the metric network) and ``"linear:a1,a2,..."``
    (``<a, x>`` for a direction with one entry per data coordinate) and ``"brightness"`` (the mean
    coordinate: an image's ink mass, a continuous reward)."""
    kind, _, arg = name.partition(":")
    if kind == "class" and arg.strip().lstrip("-").isdigit():
        from ..models.verifier import classifier_reward

        return classifier_reward(prior, int(arg))
    if kind == "linear" and arg:
        try:
            a = torch.tensor([float(v) for v in arg.split(",")], dtype=torch.float64)
        except ValueError:
            raise ValueError(f"reward {name!r}: the direction must be numbers separated by commas") from None
        n = int(torch.Size(prior.shape).numel())
        if a.numel() != n:
            raise ValueError(f"reward {name!r} has {a.numel()} entries; the prior's samples have {n} coordinates")
        return Linear(a.reshape(prior.shape))
    if name == "brightness":
        return FunctionReward(_brightness, name="brightness")
    raise ValueError(f"unknown reward {name!r}; accepted: a Reward, a function f(x0) -> (B,), or a name: "
                     f"{', '.join(REWARD_NAMES)}")


def steer(prior: Denoiser, reward: Any, method: str | SteerMethod = "fk", num: int = 16, particles: int = 8,
          nfe: int = 20, *, lam: float = 1.0, seeds: Sequence[int] | None = None, cond: dict[str, Any] | None = None,
          progress: bool = False, **options: Any) -> SampleResult:
    """``num`` samples of ``prior`` steered toward ``p(x) exp(lam r(x))``.

    Args:
        prior: a Denoiser with a ``shape`` (a shipped model, an exact mixture, an adapter).
        reward: a :class:`~diffsolve.rewards.Reward`, a function ``f(x0) -> (B,)`` or a built-in
            name (``"class:7"``).
        method: a name from :func:`diffsolve.steer.methods` or a method instance.
        num: samples to return.
        particles: particles per sample (SMC methods) or candidates per sample (searches).
        nfe: the base sampler's network calls for one trajectory (steps: ``res.nfe`` is the
            total, every particle and candidate counted).
        lam: the tilt's inverse temperature (>= 0).
        seeds: one per returned sample (default 0..num-1): every random draw of the method
            derives from them.
        cond: the prior's conditioning (e.g. ``labels``; the null label for unconditional).
        **options: the method's options.

    >>> import torch, diffsolve
    >>> from diffsolve.rewards import Linear
    >>> g = diffsolve.exact_model("gmm-2d")
    >>> res = diffsolve.steer(g, Linear(torch.tensor([2.0, 0.0])), "fk", num=4, particles=8, nfe=10)
    >>> res.nfe, tuple(res.samples.shape)          # 8 particles x 10 calls per sample
    (80, (4, 2))
    """
    prior = as_denoiser(prior)
    if getattr(prior, "shape", None) is None:
        raise ValueError("the prior has no `shape`; give it one (prior.shape = (...)) so that samples can be drawn")
    reward = named_reward(reward, prior) if isinstance(reward, str) else as_reward(reward)
    num = check_int("steer", "num", num, minimum=1, maximum=10_000_000)
    particles = check_int("steer", "particles", particles, minimum=1, maximum=1_000_000)
    nfe = check_nfe(nfe)
    if nfe is None:
        raise ValueError("steer needs an integer nfe (the base sampler's network calls per trajectory)")
    lam = check_number("steer", "lam", lam, 0)
    seeds = list(range(num)) if seeds is None else check_seeds(seeds)
    if len(seeds) != num:
        raise ValueError(f"{len(seeds)} seeds for num={num} samples: give one seed per sample")
    cond = check_cond(cond)
    m = get_method(method, **options)
    if "grad" in m.needs and not reward.differentiable:
        raise TypeError(f"method {m.name!r} needs the reward's gradient and reward {reward.name!r} has none; "
                        f"use a gradient-free method ({', '.join(n for n, c in METHODS.items() if 'grad' not in c.needs)})")
    res = m.run(prior, reward, num=num, particles=particles, nfe=nfe, lam=lam, seeds=seeds, cond=cond,
                progress=progress)
    res.info.setdefault("vjp", 0)
    res.info.update(method=m.name, particles=particles, lam=lam, base_nfe=nfe)
    return res
