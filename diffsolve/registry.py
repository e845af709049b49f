"""A registry of named method classes: the one implementation behind the inverse-problem
methods and the steering methods (``register`` decorator, ``get`` by name or instance with
options, ``describe`` listing).

A method class has the class attributes ``name``, ``paper``, ``cost``, ``needs`` and
``exact``; ``get`` refuses an unknown name with the accepted ones listed.

    >>> reg = Registry("demo")
    >>> @reg.register
    ... class A:
    ...     name, paper, cost, needs, exact = "a", "-", "-", (), False
    ...     def __init__(self, k=1): self.k = k
    >>> reg.get("a", k=3).k, reg.names()
    (3, ['a'])
    >>> reg.get("b")
    Traceback (most recent call last):
    ...
    ValueError: unknown demo method 'b'; accepted: a
"""

from __future__ import annotations

from typing import Any

__all__ = ["Registry", "describe"]


def describe(cls_or_obj: Any) -> dict[str, Any]:
    """The listing row of a method: name, paper, cost, needs, exactness."""
    return {"name": cls_or_obj.name, "paper": cls_or_obj.paper, "cost": cls_or_obj.cost,
            "needs": ", ".join(cls_or_obj.needs) or "-", "exact": cls_or_obj.exact}


class Registry:
    """Named method classes of one kind (``kind`` names it in errors)."""

    def __init__(self, kind: str):
        self.kind = kind
        self.classes: dict[str, type] = {}

    def register(self, cls: type) -> type:
        """Class decorator adding ``cls`` under ``cls.name``."""
        if cls.name in self.classes:
            raise ValueError(f"{self.kind} method {cls.name!r} registered twice")
        self.classes[cls.name] = cls
        return cls

    def names(self) -> list[str]:
        return sorted(self.classes)

    def get(self, name: Any, base: type | None = None, **options: Any) -> Any:
        """An instance by name with ``options``, or the instance itself (no options then)."""
        if base is not None and isinstance(name, base):
            if options:
                raise TypeError("options given with a method instance; configure the instance instead")
            return name
        if not isinstance(name, str) or name not in self.classes:
            raise ValueError(f"unknown {self.kind} method {name!r}; accepted: {', '.join(self.names())}")
        return self.classes[name](**options)

    def describe(self) -> list[dict[str, Any]]:
        """Every method's listing row, sorted by name."""
        return [describe(self.classes[k]) for k in self.names()]
