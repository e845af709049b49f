"""The discrete driver: run a sampler on a masked model, counting every network call.

    >>> import torch
    >>> from diffsolve.discrete.base import TokenDenoiser
    >>> class Flat(TokenDenoiser):
    ...     vocab_size = 4
    ...     def probs(self, x, t=None):
    ...         return self.keep_unmasked(x, torch.full((*x.shape, 4), 0.25, dtype=torch.float64))
    >>> res = sample_tokens(Flat(), num=2, length=8, sampler="confidence", nfe=4, seeds=[0, 1])
    >>> res.tokens.shape, res.nfe, res.info["tokens_per_call"]
    (torch.Size([2, 8]), 4, 2.0)

``init`` fixes tokens anywhere (prompts, infilling): a (B, L) or (L,) tensor holding
``mask_id`` where the sampler is free and a token where it is not.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

import torch
from torch import Tensor

from ..noise import NoiseSource, check_seeds
from ..checks import check_bool, check_int
from .base import TokenDenoiser
from .counting import CountedTokenDenoiser
from .samplers import get_sampler
from .samplers.base import Sampler, StepIn

__all__ = ["sample_tokens", "TokenResult", "MAX_LENGTH"]

MAX_LENGTH = 1_000_000


@dataclasses.dataclass
class TokenResult:
    """tokens (B, L) long; nfe: network calls counted at the model (batched calls); info: the
    sampler and its options, steps run, per-sample calls, calls skipped by the cache, tokens
    per call, seconds."""
    tokens: Tensor
    nfe: int
    info: dict[str, Any]


def _initial(model: TokenDenoiser, num: int, length: int, init: Tensor | None) -> Tensor:
    x = torch.full((num, length), model.mask_id, dtype=torch.long)
    if init is None:
        return x
    init = model.check_tokens(init[None] if isinstance(init, Tensor) and init.ndim == 1 else init, "init")
    if init.shape[1] != length or init.shape[0] not in (1, num):
        raise ValueError(f"init has shape {tuple(init.shape)}; expected ({num} or 1, {length}) (num, length)")
    return init.expand(num, length).clone()


def sample_tokens(model: TokenDenoiser, num: int, length: int, sampler: str | Sampler = "first-hitting",
                  nfe: int | None = None, *, init: Tensor | None = None, seeds: Sequence[int] | None = None,
                  cache: bool = True, progress: bool = False, **options: Any) -> TokenResult:
    """Sample ``num`` sequences of ``length`` tokens from a masked model with a registered
    sampler (``diffsolve.discrete.samplers.list_samplers()``) in ``nfe`` steps.

    ``seeds``: one integer per sample (default ``range(num)``); a sample depends only on its
    seed. ``cache``: reuse the model's output for rows that did not change (time-free models;
    samples are identical either way, fewer calls are counted)."""
    if not isinstance(model, TokenDenoiser):
        raise TypeError(f"model must be a TokenDenoiser (a masked model), got {type(model).__name__}")
    check_int("sample_tokens", "num", num)
    check_int("sample_tokens", "length", length, maximum=MAX_LENGTH)
    if model.max_len is not None and length > model.max_len:
        raise ValueError(f"length={length} is more than this model's max_len={model.max_len}")
    if nfe is not None:
        check_int("sample_tokens", "nfe", nfe)
    check_bool("sample_tokens", "cache", cache)
    check_bool("sample_tokens", "progress", progress)
    seeds = list(range(num)) if seeds is None else check_seeds(seeds)
    if len(seeds) != num:
        raise ValueError(f"seeds has {len(seeds)} entries; one per sample (num={num}) is needed")
    smp = get_sampler(sampler, **options)
    x = _initial(model, num, length, init)
    free = x == model.mask_id
    free_count = int(free.sum(1).max())
    steps = smp.plan(free_count, nfe) if free_count else 0
    counted = CountedTokenDenoiser(model, cache=cache)
    noise = NoiseSource(seeds)
    state: dict[str, Any] = {"mask_id": model.mask_id}
    if free_count:
        smp.start(state, x, free, steps)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, unit="step", desc=f"sample {smp.name}")
    t0, i = time.time(), 0
    while bool((free & (x == model.mask_id)).any()):
        if steps is not None and i >= steps:
            raise RuntimeError(f"sampler {smp.name!r} left {int((free & (x == model.mask_id)).sum())} tokens "
                               f"masked after its {steps} steps")
        frac = float((free & (x == model.mask_id)).sum()) / max(1, int(free.sum()))
        t, s = (1 - i / steps, 1 - (i + 1) / steps) if steps else (frac, 0.0)
        ctx = StepIn(x=x, free=free, i=i, steps=steps, t=t, s=s, mask_id=model.mask_id, noise=noise,
                     probs_fn=counted, state=state)
        new = smp.step(ctx)
        if bool(((new != x) & ~free).any()):
            raise RuntimeError(f"sampler {smp.name!r} changed a fixed (prompt) position")
        x = new
        i += 1
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    committed = int(free.sum())
    rc = counted.row_calls if counted.row_calls is not None else torch.zeros(num, dtype=torch.long)
    info = {"sampler": smp.name, "options": smp.options(), "steps": i, "nfe": counted.calls,
            "per_sample_nfe": rc.double().mean().item(), "cache": counted.cache, "skipped_rows": counted.skipped,
            "tokens_per_call": committed / num / max(rc.double().mean().item(), 1e-300) if counted.calls else 0.0,
            "exact": smp.exact, "seconds": time.time() - t0}
    info.update(state.get("info", {}))
    return TokenResult(tokens=x, nfe=counted.calls, info=info)
