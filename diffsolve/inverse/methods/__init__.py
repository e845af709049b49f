"""Posterior samplers; importing this package registers every method module."""

from .base import METHODS, InverseMethod, get_method, list_methods, register

__all__ = ["METHODS", "InverseMethod", "get_method", "list_methods", "register"]
