"""Masked (absorbing-state) discrete diffusion: the second engine.

* :mod:`~diffsolve.discrete.base`: the model contract (clean-token probabilities);
* :mod:`~diffsolve.discrete.schedules`: masking schedules;
* :mod:`~diffsolve.discrete.samplers`: the samplers, by name;
* :mod:`~diffsolve.discrete.sample`: the counted driver :func:`sample_tokens`;
* :mod:`~diffsolve.discrete.guidance`: classifier-free guidance :class:`TokenCFG`;
* :mod:`~diffsolve.discrete.corpus`, :mod:`~diffsolve.discrete.train`: the Shakespeare text
  and the training of the text models.
"""

from .base import TokenDenoiser, TokenDenoiserWrapper
from .guidance import TokenCFG
from .sample import TokenResult, sample_tokens
from .samplers import get_sampler, list_samplers
from .schedules import get_schedule, unmask_counts

__all__ = ["TokenDenoiser", "TokenDenoiserWrapper", "sample_tokens", "TokenResult", "get_sampler", "list_samplers",
           "get_schedule", "unmask_counts", "TokenCFG"]
