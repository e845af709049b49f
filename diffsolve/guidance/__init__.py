"""Guidance as Denoisers that wrap Denoisers (DESIGN.md, "Denoisers compose")."""

from .cfg import CFG
from .gradient import VJPGuided

__all__ = ["CFG", "VJPGuided"]
