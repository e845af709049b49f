"""Discrete peers: another library's masked-diffusion sampler run on *our* exact model, with the
network calls counted at the model.

flow_matching (Meta, ``pip install --no-deps flow-matching``; 1.0.10 checked)
-----------------------------------------------------------------------------
Its discrete sampler is :class:`flow_matching.solver.MixtureDiscreteEulerSolver` on a
:class:`flow_matching.path.MixtureDiscreteProbPath` with a masked source: time runs from 0
(every position is the mask) to 1 (data), a position has flipped to data with probability
``kappa(t)``, and the model is a ``flow_matching.utils.ModelWrapper`` returning the posterior
probabilities ``p(x1 | x_t)`` over the vocabulary *including* the mask token (the solver's
``vocabulary_size`` is ``V + 1`` with the mask the last id, as in its text example). Our masked
models use the same ids (``mask_id = V``), so the wrapper returns ``model.probs(x)`` with a zero
column appended for the mask (our rows at unmasked positions are one-hot, which the solver
keeps). Each solver step draws ``x1`` from the posterior at every position, and a masked one
jumps to its draw with probability ``1 - exp(-h * kappa'(t) / (1 - kappa(t)))``; the last step
takes ``x1`` everywhere. One step = one model call.

Default configuration (what a user gets from the library): ``PolynomialConvexScheduler(n=1.0)``
(``kappa(t) = t``, the scheduler of the library's own ``MixtureDiscreteProbPath`` example; the
library has no default scheduler) and ``solver.sample``'s defaults ``div_free=0.0``,
``dtype_categorical=torch.float32``, ``time_grid=[0, 1]``, with a uniform ``step_size``. It is
chosen here so that the solver makes exactly ``nfe`` steps (its step count is
``ceil((t_final - t_init) / step_size)``; ``1 / nfe`` is nudged by one ulp where rounding would
give ``nfe + 1``); ``nfe = 1`` passes the grid ``[t_init, t_final]`` with ``step_size=None``
(the solver refuses ``step_size`` equal to the interval). The calls are counted at the wrapper
and checked to be ``nfe`` exactly.

Seeds: the solver draws from torch's global generator (``torch.multinomial``, ``torch.rand``)
and takes no generator, so it cannot be seeded per sample inside one batch. By default
(``batched=False``) each sample is run as its own batch of one under
``torch.manual_seed(seed)`` (inside ``torch.random.fork_rng``, the caller's generator is left
untouched): sample b depends only on ``seeds[b]``, and the calls of a batched run (``nfe``) are
made once per sample. ``batched=True`` runs all samples in one batch under ``seeds[0]`` (faster;
a sample then depends on the whole batch).

    >>> import torch
    >>> from diffsolve.discrete.chain import MarkovChain
    >>> ch = MarkovChain(torch.tensor([[0.9, 0.1], [0.2, 0.8]], dtype=torch.float64))
    >>> res = run_flow_matching(ch, num=2, length=6, nfe=3, seeds=[0, 1])  # doctest: +SKIP
    >>> res.tokens.shape, res.nfe, res.info["per_sample_nfe"]           # doctest: +SKIP
    (torch.Size([2, 6]), 3, 3.0)
"""

from __future__ import annotations

import importlib.util
import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from ..discrete.base import TokenDenoiser
from ..noise import check_seeds

__all__ = ["DISCRETE_PEERS", "discrete_peer_available", "flow_matching_step_size", "run_flow_matching",
           "run_discrete_peer", "PeerTokens"]

#: peer name (as in the text benchmark's ``peer:<name>`` cells) -> the module it needs
DISCRETE_PEERS = {"flow_matching": "flow_matching"}


def discrete_peer_available(name: str = "flow_matching") -> bool:
    """Whether the peer library imports here."""
    if name not in DISCRETE_PEERS:
        raise ValueError(f"unknown discrete peer {name!r}; known: {', '.join(DISCRETE_PEERS)}")
    return importlib.util.find_spec(DISCRETE_PEERS[name]) is not None


@dataclass
class PeerTokens:
    """tokens (B, L) long; nfe: the calls of one run (counted at the model wrapper, = a batched
    run's calls); info: total calls, per-sample calls (``per_sample_nfe``), tokens per call, seconds, configuration."""
    tokens: Tensor
    nfe: int
    info: dict[str, Any]


def flow_matching_step_size(nfe: int, t_init: float = 0.0, t_final: float = 1.0) -> float:
    """The uniform ``step_size`` for which ``MixtureDiscreteEulerSolver.sample`` makes ``nfe``
    steps on ``[t_init, t_final]`` (its count is ``ceil((t_final - t_init) / step_size)``);
    needs ``nfe >= 2`` (the solver asserts ``step_size < t_final - t_init``)."""
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 2:
        raise ValueError(f"a step_size exists for nfe >= 2 only, got nfe={nfe!r}")
    span = t_final - t_init
    h = span / nfe
    for _ in range(64):
        n = math.ceil(span / h)
        if n == nfe:
            return h
        h = math.nextafter(h, math.inf if n > nfe else 0.0)
    raise RuntimeError(f"no step_size gives {nfe} steps on [{t_init}, {t_final}]")


def _make_wrapper(model: TokenDenoiser, scheduler: Any):
    from flow_matching.utils import ModelWrapper

    class ExactPosterior(ModelWrapper):
        """Our masked model as flow_matching's x1-posterior model over V + 1 ids (mask last)."""

        def __init__(self):
            super().__init__(None)
            self.calls = 0

        def forward(self, x: Tensor, t: Tensor, **extras: Any) -> Tensor:
            self.calls += 1
            t_ours = None
            if not model.time_free:  # our time is the masked fraction: 1 - kappa(t)
                t_ours = float(1 - scheduler(t.reshape(-1)[:1].to(torch.float64)).alpha_t[0])
            p = model.probs(x, t_ours)
            return torch.cat([p, p.new_zeros(*p.shape[:-1], 1)], dim=-1)

    return ExactPosterior()


def run_flow_matching(model: TokenDenoiser, num: int, length: int, nfe: int, *,
                      seeds: Sequence[int] | None = None, batched: bool = False, scheduler_n: float = 1.0,
                      dtype_categorical: torch.dtype = torch.float32, time_grid: tuple[float, float] = (0.0, 1.0)
                      ) -> PeerTokens:
    """Sample ``num`` sequences of ``length`` tokens from ``model`` with flow_matching's
    ``MixtureDiscreteEulerSolver`` in exactly ``nfe`` model calls per sample (the module
    docstring gives the default configuration and the seeding).

    ``scheduler_n``: ``PolynomialConvexScheduler(n)`` (1.0: ``kappa(t) = t``); ``dtype_categorical``
    and ``time_grid`` are passed to ``solver.sample`` (its text example uses float64 and
    ``[0, 1 - 1e-3]``)."""
    from flow_matching.path import MixtureDiscreteProbPath
    from flow_matching.path.scheduler import PolynomialConvexScheduler
    from flow_matching.solver import MixtureDiscreteEulerSolver

    if not isinstance(model, TokenDenoiser):
        raise TypeError(f"model must be a TokenDenoiser (a masked model), got {type(model).__name__}")
    for name, v in (("num", num), ("length", length), ("nfe", nfe)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    if model.max_len is not None and length > model.max_len:
        raise ValueError(f"length={length} is more than this model's max_len={model.max_len}")
    seeds = list(range(num)) if seeds is None else check_seeds(seeds)
    if len(seeds) != num:
        raise ValueError(f"seeds has {len(seeds)} entries; one per sample (num={num}) is needed")
    t0, t1 = (float(v) for v in time_grid)
    if not 0.0 <= t0 < t1 <= 1.0:
        raise ValueError(f"time_grid must be (t_init, t_final) with 0 <= t_init < t_final <= 1, got {time_grid!r}")
    scheduler = PolynomialConvexScheduler(n=scheduler_n)
    path = MixtureDiscreteProbPath(scheduler=scheduler)
    V, mask = model.vocab_size, model.mask_id
    wrapper = _make_wrapper(model, scheduler)
    solver = MixtureDiscreteEulerSolver(model=wrapper, path=path, vocabulary_size=V + 1)
    if nfe >= 2:
        kw: dict[str, Any] = dict(step_size=flow_matching_step_size(nfe, t0, t1),
                                  time_grid=torch.tensor([t0, t1]))
    else:
        kw = dict(step_size=None, time_grid=torch.tensor([t0, t1]))
    groups = [list(range(num))] if batched else [[b] for b in range(num)]
    out = torch.empty(num, length, dtype=torch.long)
    total, start = 0, time.time()
    for rows in groups:
        x_init = torch.full((len(rows), length), mask, dtype=torch.long)
        before = wrapper.calls
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seeds[rows[0]])
            x = solver.sample(x_init=x_init, dtype_categorical=dtype_categorical, **kw)
        made = wrapper.calls - before
        if made != nfe:
            raise RuntimeError(f"flow_matching's solver made {made} model calls, not the {nfe} asked")
        if bool((x == mask).any()) or int(x.min()) < 0:
            raise RuntimeError("flow_matching's solver left masked positions")
        out[rows] = x.long()
        total += made
    info = {"peer": "flow_matching", "solver": "MixtureDiscreteEulerSolver",
            "scheduler": f"polynomial(n={scheduler_n:g})",
            "step_size": kw["step_size"], "time_grid": [t0, t1], "div_free": 0.0,
            "dtype_categorical": str(dtype_categorical).replace("torch.", ""), "batched": batched,
            "calls_total": total, "per_sample_nfe": float(nfe), "tokens_per_call": length / nfe,
            "seconds": time.time() - start}
    return PeerTokens(tokens=out, nfe=nfe, info=info)


def run_discrete_peer(name: str, model: TokenDenoiser, num: int, length: int, nfe: int, *,
                      seeds: Sequence[int] | None = None, **options: Any) -> PeerTokens:
    """Run the discrete peer ``name`` (a key of :data:`DISCRETE_PEERS`)."""
    if name not in DISCRETE_PEERS:
        raise ValueError(f"unknown discrete peer {name!r}; known: {', '.join(DISCRETE_PEERS)}")
    if not discrete_peer_available(name):
        raise RuntimeError(f"the peer library {DISCRETE_PEERS[name]!r} is not installed "
                           f"(pip install --no-deps flow-matching)")
    return run_flow_matching(model, num, length, nfe, seeds=seeds, **options)
