"""The method contract and registry for posterior sampling.

A method is a class with the class attributes ``name``, ``paper``, ``cost`` (network calls and
vector-Jacobian products per step, in words), ``needs`` (``"svd"``, ``"vjp"``) and
``default_nfe``, options validated in ``__init__`` (each documented with its default, per
operator family where it matters: ``problem.operator.name``), and

    run(prior, problem, noise, *, nfe, seeds, cond, progress) -> SampleResult

``res.nfe`` counts every network evaluation: forward calls, and each vector-Jacobian product
through the network as one more (also reported alone in ``res.info["vjp"]``); particles
multiply calls and are counted.  ``res.samples`` are posterior samples in data space.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from ...denoisers import Denoiser
from ...registry import Registry, describe
from ..problem import Problem

__all__ = ["InverseMethod", "register", "get_method", "list_methods", "METHODS"]

REGISTRY = Registry("inverse")
METHODS: dict[str, type["InverseMethod"]] = REGISTRY.classes


class InverseMethod:
    """Base class of posterior samplers (see the module docstring)."""

    name: ClassVar[str] = "method"
    paper: ClassVar[str] = ""
    cost: ClassVar[str] = ""
    needs: ClassVar[tuple[str, ...]] = ()
    exact: ClassVar[bool] = False  #: asymptotically exact (particles / steps -> infinity)

    def run(self, prior: Denoiser, problem: Problem, noise: Tensor, *, nfe: int, seeds: list[int],
            cond: dict[str, Any], progress: bool = False):  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return describe(self)


register = REGISTRY.register


def get_method(name: str | InverseMethod, **options: Any) -> InverseMethod:
    """A method instance by name (see :func:`list_methods`)."""
    return REGISTRY.get(name, InverseMethod, **options)


def list_methods() -> list[dict[str, Any]]:
    """Every registered method with its paper, cost per step, needs and exactness."""
    return REGISTRY.describe()
