"""Text generation with a masked character model: one call.

    >>> from diffsolve.discrete.text import generate
    >>> res = generate("shakespeare", num=2, length=64, nfe=16, prompt="ROMEO:\\n", seeds=[0, 1])  # doctest: +SKIP
    >>> print(res.texts[0])                                                                       # doctest: +SKIP

``prompt`` fixes the first characters; ``fixed`` fixes characters anywhere (``{position: text}``,
infilling); every other position is generated. Without ``sampler`` the recommended one
(:data:`RECOMMENDED`, chosen from the benchmark in ``bench/results/text.md``) is used.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import torch
from torch import Tensor

from .base import TokenDenoiser
from .sample import sample_tokens
from .samplers.base import Sampler

__all__ = ["generate", "TextResult", "RECOMMENDED", "text_init"]

#: the sampler and options ``generate`` uses when none is given: on the shipped model at nfe =
#: length / 4 (bench/results/text.md) the lowest AR-reference NLL whose unigram entropy stays
#: within 5% of real text: mdlm at temperature 0.9 (3.03 nats/char, entropy -2.5%); mdlm at 1.0
#: gave 3.25 (-0.9%), at 0.8 2.89 (-4.6%, at the edge); confidence decoding 2.03 but its entropy
#: collapses (-19%), margin / entropy scores 3.55 / 3.76
RECOMMENDED: dict[str, Any] = {"sampler": "mdlm", "options": {"temperature": 0.9}}


@dataclasses.dataclass
class TextResult:
    """texts: the generated strings (prompt included); tokens (B, L); nfe: network calls counted
    at the model; info: sampler, options, tokens per call, per-sample calls, seconds."""
    texts: list[str]
    tokens: Tensor
    nfe: int
    info: dict[str, Any]


def text_init(model: TokenDenoiser, length: int, prompt: str | None = None,
              fixed: dict[int, str] | None = None) -> Tensor | None:
    """(L,) ids: the prompt at the start, ``fixed`` texts at their positions, the mask elsewhere
    (None when nothing is fixed)."""
    if prompt is None and not fixed:
        return None
    init = torch.full((length,), model.mask_id, dtype=torch.long)
    pieces = ([(0, prompt)] if prompt else []) + sorted((fixed or {}).items())
    for pos, text in pieces:
        if isinstance(pos, bool) or not isinstance(pos, int) or not isinstance(text, str):
            raise TypeError(f"fixed must map integer positions to strings, got {pos!r}: {text!r}")
        if pos < 0 or pos + len(text) > length:
            raise ValueError(f"text {text!r} at position {pos} does not fit in length {length}")
        init[pos:pos + len(text)] = model.encode(text)
    return init


def generate(model: TokenDenoiser | str, num: int = 8, length: int = 256, sampler: str | Sampler | None = None,
             nfe: int | None = 64, prompt: str | None = None, seeds: Sequence[int] | None = None, *,
             fixed: dict[int, str] | None = None, cache: bool = True, progress: bool = False,
             **options: Any) -> TextResult:
    """Generate ``num`` texts of ``length`` characters from a masked text model (a
    :class:`~diffsolve.discrete.base.TokenDenoiser` with a ``vocab``, or a model name such as
    ``"shakespeare"``) with ``sampler`` in ``nfe`` network calls (a cap for adaptive decoders,
    None for the first-hitting sampler's one call per character)."""
    if isinstance(model, str):
        from .models import load_text_model
        model = load_text_model(model)
    if not isinstance(model, TokenDenoiser) or model.vocab is None:
        raise TypeError(f"model must be a masked text model (a TokenDenoiser with a vocabulary) or its name, "
                        f"got {type(model).__name__}")
    if sampler is None:
        sampler, options = RECOMMENDED["sampler"], {**RECOMMENDED["options"], **options}
    init = text_init(model, length, prompt, fixed)
    res = sample_tokens(model, num, length, sampler, nfe, init=init, seeds=seeds, cache=cache, progress=progress,
                        **options)
    return TextResult(texts=[model.decode(row) for row in res.tokens], tokens=res.tokens, nfe=res.nfe, info=res.info)
