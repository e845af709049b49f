"""Guidance as Denoisers that wrap Denoisers (DESIGN.md, "Denoisers compose")."""

from .cfg import CFG

__all__ = ["CFG"]
