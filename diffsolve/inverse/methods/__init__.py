"""Posterior samplers; importing this package registers every method module."""

from .base import METHODS, InverseMethod, get_method, list_methods, register
from . import daps, diffpir, dps, pigdm, red_diff  # noqa: F401  (registers)
from . import ddnm, ddrm, smc  # noqa: F401  (registers)
from . import auto  # noqa: F401  (registers; after the methods it resolves to)

__all__ = ["METHODS", "InverseMethod", "get_method", "list_methods", "register"]
