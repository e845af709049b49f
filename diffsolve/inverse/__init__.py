"""Posterior sampling for linear inverse problems with a diffusion prior: measurement operators
(:mod:`.operators`), the problem and its likelihood (:mod:`.problem`), the methods
(:mod:`.methods`, listed by :func:`methods`) and the one call :func:`solve_inverse`."""

from .methods import METHODS, InverseMethod, get_method, list_methods
from .operators import (SVD, Denoising, GaussianBlur, Inpainting, LinearOperator, Operator, SuperResolution,
                        sigma_in_model_units)
from .problem import Problem
from .solve import DEFAULT_METHOD, solve_inverse

methods = list_methods

__all__ = ["Operator", "SVD", "LinearOperator", "Denoising", "Inpainting", "SuperResolution", "GaussianBlur",
           "sigma_in_model_units", "Problem", "solve_inverse", "methods",
           "METHODS", "InverseMethod", "get_method", "DEFAULT_METHOD"]
