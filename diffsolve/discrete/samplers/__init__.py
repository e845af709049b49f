"""The discrete samplers, registered by name (see :func:`list_samplers`)."""

from . import ancestral, confidence, first_hitting  # noqa: F401  (registers them)
from . import adablock, joint, parallel, remask  # noqa: F401  (registers them)
from .base import SAMPLERS, Sampler, StepIn, get_sampler, list_samplers, register

__all__ = ["SAMPLERS", "Sampler", "StepIn", "get_sampler", "list_samplers", "register"]
