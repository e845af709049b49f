"""Inference-time steering: rewards, particles and search (DESIGN.md roles 2 and 3).

``diffsolve.steer(prior, reward, method, num, particles, nfe, lam=...)`` returns samples of
``p(x) exp(lam r(x)) / Z``; :func:`methods` lists the methods with their papers and costs.
"""

from . import bon, dts, fk, flowchef, path_search, rbf, search, tds  # noqa: F401  (register the methods)
from ..callable_module import make_callable
from .base import METHODS, SteerMethod, get_method, list_methods, steer

methods = list_methods

__all__ = ["steer", "methods", "METHODS", "SteerMethod", "get_method"]


make_callable(__name__, steer)
