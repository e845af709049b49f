"""AdaBlock-dLLM: semi-autoregressive decoding whose block ends where the model predicts a delimiter.

Fixed semi-AR blocks [LLaDA Sec. 2.4; Fast-dLLM Sec. 3.1] cut the text at arbitrary places:
high-confidence tokens just past the block wait ("late decoding overhead") and low-confidence
tokens inside it are forced out too early ("premature decoding error") [AdaBlock-dLLM Sec. 3].
AdaBlock-dLLM [Lu et al. 2025, "AdaBlock-dLLM: semantic-aware diffusion LLM inference via
adaptive block size", Sec. 4] chooses each block's size when the block starts, from the
model's predictions at that step:

* look at the window of ``max_block`` positions that starts at the first still-masked free
  position (just after the decoded prefix);
* among them, the positions whose predicted token is a delimiter (``delimiters``; for a text
  model '\\n' by default) with confidence ``>= delimiter_tau`` are candidate ends; the block
  ends just after the first one (``pick="first"``) or after the most confident one
  (``pick="confident"``)   # [AdaBlock-dLLM Sec. 4, block size determination]
* with no candidate the block has ``default_block`` positions; sizes are clipped to
  ``[min_block, max_block]``.

Inside a block the threshold rule of Fast-dLLM decodes (:func:`.parallel.threshold_commit`:
every token with confidence ``>= tau``, at least one per call). The sampler is adaptive like
the parallel decoders: ``nfe`` is a cap (None: none) and its last step commits everything left.
The block is chosen per row (rows of a batch are independent); the size decision uses the same
network call as the step's decoding (no extra call). ``state["info"]["blocks"]`` reports the
number of blocks started (all rows together).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ...checks import check_choice, check_int, check_number
from .ancestral import _check_temperature
from .base import StepIn, confidence_score, draw_tokens, register
from .parallel import _Parallel, threshold_commit

__all__ = ["AdaBlock"]

PICKS = ("first", "confident")


def _check_delimiters(delimiters) -> tuple[int, ...] | None:
    if delimiters is None:
        return None
    if isinstance(delimiters, int) and not isinstance(delimiters, bool):
        delimiters = (delimiters,)
    if not isinstance(delimiters, Sequence) or isinstance(delimiters, str) or not delimiters or any(
            isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in delimiters):
        raise ValueError(f"adablock: delimiters={delimiters!r} is not accepted; accepted: None (the id of '\\n' "
                         "for a text model) or a token id >= 0 or a non-empty sequence of them")
    return tuple(int(d) for d in delimiters)


@register
class AdaBlock(_Parallel):
    """AdaBlock-dLLM: semi-AR threshold decoding with each block ending after a confidently predicted delimiter."""
    name = "adablock"
    aliases = ("adablock-dllm",)
    paper = "Lu et al. 2025 (AdaBlock-dLLM), Sec. 4 adaptive block size; Wu et al. 2025 (Fast-dLLM) threshold rule"

    def __init__(self, tau: float = 0.9, delimiters: int | Sequence[int] | None = None, delimiter_tau: float = 0.5,
                 min_block: int = 4, max_block: int = 64, default_block: int = 16, pick: str = "first",
                 temperature: float = 1.0):
        self.tau = check_number("adablock", "tau", tau, 0.0, 1.0, low_open=True)
        self.delimiters = _check_delimiters(delimiters)
        self.delimiter_tau = check_number("adablock", "delimiter_tau", delimiter_tau, 0.0, 1.0)
        self.min_block = check_int("adablock", "min_block", min_block)
        self.max_block = check_int("adablock", "max_block", max_block, minimum=self.min_block)
        self.default_block = check_int("adablock", "default_block", default_block, minimum=self.min_block,
                                       maximum=self.max_block)
        self.pick = check_choice("adablock", "pick", pick, PICKS)
        self.temperature = _check_temperature(temperature)
        self.block_size = None  # blocks are chosen at run time

    def start(self, state: dict, x: Tensor, free: Tensor, steps: int | None) -> None:
        state["block_end"] = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        state["info"] = {"blocks": 0}

    def _delimiter_ids(self, ctx: StepIn, vocab_size: int) -> Tensor:
        ids = self.delimiters
        if ids is None:
            vocab = getattr(ctx.probs_fn, "vocab", None)
            ids = (vocab.index("\n"),) if isinstance(vocab, str) and "\n" in vocab else ()
        bad = [d for d in ids if d >= vocab_size]
        if bad:
            raise ValueError(f"adablock: delimiters={list(ids)!r} holds ids {bad} outside the model's tokens "
                             f"0..{vocab_size - 1}")
        return torch.tensor(ids, dtype=torch.long, device=ctx.x.device)

    def _new_ends(self, ctx: StepIn, tokens: Tensor, conf: Tensor, start: Tensor) -> Tensor:
        """Per row, the end (exclusive) of a block starting at ``start``."""
        b, n = tokens.shape
        pos = torch.arange(n, device=tokens.device)[None, :]
        window = (pos >= start[:, None]) & (pos < start[:, None] + self.max_block)
        delims = self._delimiter_ids(ctx, int(ctx.mask_id))
        is_delim = torch.isin(tokens, delims) if delims.numel() else torch.zeros_like(window)
        cand = window & is_delim & (conf >= self.delimiter_tau)  # [AdaBlock-dLLM Sec. 4]
        if self.pick == "first":
            end = torch.where(cand, pos.expand_as(cand), torch.full_like(tokens, n)).min(1).values
        else:
            key = torch.where(cand, conf.double(), torch.tensor(-1.0, dtype=torch.float64))
            end = key.argmax(1)
        size = torch.where(cand.any(1), end - start + 1, torch.full_like(start, self.default_block))
        size = size.clamp(self.min_block, self.max_block)
        return start + size

    def step(self, ctx: StepIn) -> Tensor:
        p = ctx.probs()
        b, n, v = p.shape
        tokens = draw_tokens(p, ctx.uniform((n,)), self.temperature)
        todo = ctx.masked & ctx.free
        if ctx.steps is not None and ctx.i >= ctx.steps - 1:
            return torch.where(todo, tokens, ctx.x)  # the cap is reached: commit every remaining position
        conf = confidence_score(p, tokens, "confidence")
        pos = torch.arange(n, device=ctx.x.device)
        start = torch.where(todo, pos.expand_as(todo), torch.full_like(ctx.x, n)).min(1).values
        end = ctx.state["block_end"]
        new = start >= end  # the current block is done (or none started): choose the next one
        if bool(new.any()):
            end = torch.where(new, self._new_ends(ctx, tokens, conf, start), end)
            ctx.state["block_end"] = end
            ctx.state["info"]["blocks"] += int((new & todo.any(1)).sum())
        allowed = todo & (pos[None, :] < end[:, None])
        commit = threshold_commit(conf, allowed, self.tau)  # [Fast-dLLM Eq. 5] inside the block
        return torch.where(commit, tokens, ctx.x)
