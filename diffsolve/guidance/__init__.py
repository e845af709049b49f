"""Guidance as Denoisers that wrap Denoisers (DESIGN.md, "Denoisers compose")."""

from .adaptive import AdaptiveGuidance
from .autoguidance import Autoguidance
from .cfg import CFG
from .classifier import ClassifierGuidance
from .free import Recurrent, UniversalGuidance
from .gradient import VJPGuided

__all__ = ["CFG", "VJPGuided", "AdaptiveGuidance", "Autoguidance", "UniversalGuidance", "Recurrent",
           "ClassifierGuidance"]
