"""Denoisers in canonical space: the contract and wrapper base (:mod:`.base`), the network
adapters (:mod:`.adapters`) and thresholding (:mod:`.thresholding`).

A :class:`Denoiser` is a callable ``D(y, s, **cond) -> x0_hat`` where ``y = x / alpha`` and
``s = sigma / alpha`` (DESIGN.md); every guidance, caching or thresholding step is a
:class:`DenoiserWrapper` around one.
"""

from ..tensors import bc
from .adapters import (PREDICTIONS, NetworkDenoiser, edm_preconditioning, from_network, prediction_from_x0,
                       x0_from_prediction)
from .base import (Denoiser, DenoiserFn, DenoiserWrapper, FunctionDenoiser, accepted_keywords, as_denoiser,
                   as_level, check_shape, expand_s)
from .thresholding import Thresholded

_bc = bc  # the historical name, kept for existing imports

__all__ = ["Denoiser", "DenoiserFn", "DenoiserWrapper", "FunctionDenoiser", "NetworkDenoiser", "Thresholded",
           "from_network", "x0_from_prediction", "prediction_from_x0", "edm_preconditioning", "PREDICTIONS",
           "expand_s", "as_level", "as_denoiser", "accepted_keywords", "check_shape", "bc"]
