"""What every discrete sampler shares: the step context, token draws in float64, confidence
scores, and the registry.

A sampler is a class with ``name``, ``aliases``, ``paper``, ``exact`` (exact for an exact
model: samples from the model's joint distribution) and
``step(ctx: StepIn) -> Tensor`` returning the new tokens. The driver
(:func:`diffsolve.discrete.sample.sample_tokens`) owns the loop, the counted model, the seeds
and the fixed (prompt) positions; a step may call ``ctx.probs()`` (one counted network call,
at most once per step) and must commit at least one token per step (or remask fewer than it
commits) so that the loop ends.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import torch
from torch import Tensor

from ...noise import NoiseSource
from ...solvers.registry import solver_options

__all__ = ["StepIn", "Sampler", "SAMPLERS", "register", "get_sampler", "list_samplers", "draw_tokens",
           "confidence_score", "SCORES", "top_k_mask", "rank_commit"]


@dataclasses.dataclass
class StepIn:
    """One step's view: ``x`` (B, L) tokens (``mask_id`` where masked), ``free`` (B, L) the
    positions the sampler may change (not prompt), step ``i`` of ``steps`` planned (None for
    decoders that stop when done), the uniform times ``t`` (now) and ``s`` (next), ``noise``
    (per-sample float64 uniforms), and ``probs()`` (the counted model at ``x``)."""
    x: Tensor
    free: Tensor
    i: int
    steps: int | None
    t: float
    s: float
    mask_id: int
    noise: NoiseSource
    probs_fn: Callable[[Tensor, float | None], Tensor]
    state: dict[str, Any]

    @property
    def masked(self) -> Tensor:
        return self.x == self.mask_id

    def probs(self, x: Tensor | None = None) -> Tensor:
        return self.probs_fn(self.x if x is None else x, self.t)

    def uniform(self, shape: tuple[int, ...], draw: int = 0) -> Tensor:
        """Float64 uniforms (B, *shape) for this step (a pure function of seed, step and draw)."""
        return self.noise.uniform(self.i, shape, draw, device=self.x.device)


def draw_tokens(p: Tensor, u: Tensor, temperature: float = 1.0) -> Tensor:
    """Tokens (B, L) drawn from ``p`` (B, L, V) by inverting each position's float64 CDF at the
    uniforms ``u`` (B, L) [Zheng et al. 2024, Sec. 5: float32 categorical sampling truncates the
    tail and lowers the samples' entropy, which flatters low-diversity decoders; every draw here
    is float64]. ``temperature`` 0 is the argmax; t rescales to ``p^(1/t)`` renormalised. A token
    of probability 0 is never drawn."""
    p = p.double()
    if temperature == 0:
        return p.argmax(-1)
    if temperature != 1:
        logp = torch.log(p) / temperature
        p = torch.softmax(logp, -1)
    cdf = p.cumsum(-1)
    cdf = cdf / cdf[..., -1:]
    tok = torch.searchsorted(cdf, u.double()[..., None].contiguous(), right=True).squeeze(-1)
    return tok.clamp_max(p.shape[-1] - 1)


SCORES = ("confidence", "margin", "entropy")


def confidence_score(p: Tensor, tokens: Tensor, score: str = "confidence") -> Tensor:
    """How sure the model is at every position (higher = surer) [LLaDA Sec. 2.4; Kim et al.]:
    ``confidence`` the probability of the drawn token, ``margin`` the top-1 minus top-2
    probability, ``entropy`` the negative entropy of the position's distribution."""
    if score == "confidence":
        return p.gather(-1, tokens[..., None]).squeeze(-1)
    if score == "margin":
        top = p.topk(2, dim=-1).values
        return top[..., 0] - top[..., 1]
    if score == "entropy":
        return (p * torch.log(p.clamp_min(1e-300))).sum(-1)
    raise ValueError(f"unknown score {score!r}; accepted: {', '.join(SCORES)}")


def top_k_mask(score: Tensor, allowed: Tensor, k: Tensor) -> Tensor:
    """(B, L) bool: in each row the ``k[b]`` allowed positions of highest score (ties broken by
    position, left first)."""
    s = torch.where(allowed, score.double(), torch.tensor(-math.inf, dtype=torch.float64))
    order = torch.argsort(-s, dim=1, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(s.shape[1]).expand_as(order))
    return (rank < k[:, None]) & allowed


def rank_commit(x: Tensor, commit: Tensor, tokens: Tensor) -> Tensor:
    """``x`` with ``tokens`` written at the ``commit`` positions."""
    return torch.where(commit, tokens, x)


class Sampler:
    """Base of the discrete samplers (see the module docstring)."""
    name: str = "?"
    aliases: tuple[str, ...] = ()
    paper: str = ""
    exact: bool = False
    #: "fixed": runs ``nfe`` steps; "adaptive": stops when everything is unmasked (nfe is a cap)
    budget: str = "fixed"

    def plan(self, free_count: int, nfe: int | None) -> int | None:
        """The number of steps to run for ``free_count`` masked positions (None: until done): a
        fixed-budget sampler runs ``nfe`` steps and needs it; an adaptive one takes it as a cap."""
        if nfe is None and self.budget == "fixed":
            raise ValueError(f"sampler {self.name!r} needs nfe (its number of steps), got None")
        return nfe

    def start(self, ctx_state: dict, x: Tensor, free: Tensor, steps: int | None) -> None:
        """Prepare per-run state (counts per step, ...)."""

    def step(self, ctx: StepIn) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def options(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in (solver_options(type(self)) or ()) if hasattr(self, k)}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "aliases": list(self.aliases), "exact": self.exact, "budget": self.budget,
                "options": self.options(), "paper": self.paper, "doc": (type(self).__doc__ or "").strip().split("\n")[0]}


SAMPLERS: dict[str, type[Sampler]] = {}
_ALIASES: dict[str, str] = {}


def register(cls: type[Sampler]) -> type[Sampler]:
    for key in (cls.name, *cls.aliases):
        if key in SAMPLERS or key in _ALIASES:
            raise ValueError(f"sampler name {key!r} of {cls.__name__} is already registered")
    SAMPLERS[cls.name] = cls
    for a in cls.aliases:
        _ALIASES[a] = cls.name
    return cls


def get_sampler(name: str | Sampler, **options: Any) -> Sampler:
    """A discrete sampler by name or alias with its options, or the instance given."""
    if isinstance(name, Sampler):
        if options:
            raise TypeError(f"options {sorted(options)} given with a sampler instance; configure the instance instead")
        return name
    key = _ALIASES.get(name, name) if isinstance(name, str) else None
    if key not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; accepted: {', '.join(sorted(SAMPLERS))}")
    cls = SAMPLERS[key]
    accepted = solver_options(cls)
    unknown = sorted(set(options) - set(accepted or ()))
    if accepted is not None and unknown:
        raise TypeError(f"sampler {cls.name!r} takes no option(s) {', '.join(unknown)}; "
                        f"accepted: {', '.join(accepted) or 'none'}")
    return cls(**options)


def list_samplers() -> list[dict]:
    """Every registered sampler: name, aliases, exactness, budget kind, options, paper."""
    return [SAMPLERS[k]().describe() for k in sorted(SAMPLERS)]
