"""Posterior sampling for linear inverse problems with a diffusion prior (issue: inverse
problems): measurement operators (:mod:`.operators`)."""

from .operators import SVD, LinearOperator, Operator, sigma_in_model_units

__all__ = ["Operator", "SVD", "LinearOperator", "sigma_in_model_units"]
