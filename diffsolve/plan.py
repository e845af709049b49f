"""A sampling plan: the solver, its options and the exact noise levels of one run, with a record
of where they came from (:func:`diffsolve.tune.tune` fits one to a model; ``solver="auto"``
builds one from the NFE and the path alone).

A plan is plain data: it saves to and loads from JSON (next to a checkpoint, say), and
``diffsolve.sample(denoiser, noise, plan=plan)`` samples with it exactly as it was fitted.

    >>> import torch, diffsolve
    >>> from diffsolve.models.gmm import builtin
    >>> plan = Plan(solver="dpm++2m", sigmas=(80.0, 2.0, 0.3, 0.0), path="edm", nfe=3, method="by hand")
    >>> noise = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> diffsolve.sample(builtin("gmm-2d"), noise, plan=plan, path="edm").nfe
    3
    >>> Plan.from_json(plan.to_json()) == plan
    True
"""

from __future__ import annotations

import json
import math
import os
import numbers
from dataclasses import asdict, dataclass, field
from typing import Any

from .io import atomic_write

__all__ = ["Plan", "PLAN_FORMAT", "PLANS_DIR", "shipped_plans"]

#: the ``format`` field of a plan's JSON
PLAN_FORMAT = "diffsolve-plan/1"
#: where the plans shipped with the package live (``NAME.plan.json``)
PLANS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models", "plans")


def shipped_plans() -> list[str]:
    """The names of the plans shipped with the package (``Plan.load(name)`` reads one)."""
    if not os.path.isdir(PLANS_DIR):
        return []
    return sorted(f[: -len(".plan.json")] for f in os.listdir(PLANS_DIR) if f.endswith(".plan.json"))


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


@dataclass(frozen=True)
class Plan:
    """What one sampling run does, and how it was chosen.

    solver: a solver name (``diffsolve.solvers()``); options: its keyword options.
    sigmas: every noise level of the run in canonical ``s = sigma / alpha``, decreasing, from the
        start level to the end (``0``: the last step denoises; a positive end: the samples are
        the states there).
    path: the name of the path the levels were chosen for (a denoiser on another path is refused
        by :func:`diffsolve.sample`), or None (levels valid on any path).
    nfe: the network calls the solver makes on this grid.
    method: how the plan was made (``"ld3"``, ``"gits"``, ``"auto"``, ...).
    cost: what making it cost: ``{"calls": network calls, "rows": samples x calls, "seconds": ...}``.
    seeds: the per-sample seeds of the noise it was fitted on (empty: none).
    fitted: anything else the method records (losses before and after, the teacher, ...).
    """

    solver: str
    sigmas: tuple[float, ...]
    nfe: int
    path: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    method: str = "manual"
    cost: dict[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] = ()
    fitted: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.solver, str) or not self.solver:
            raise ValueError(f"Plan.solver must be a solver name, got {self.solver!r}")
        try:
            sig = tuple(float(v) for v in self.sigmas if _is_real(v) or _raise(v))
        except TypeError:
            raise ValueError(f"Plan.sigmas must be a sequence of numbers, got {self.sigmas!r}") from None
        if len(sig) < 2 or not all(math.isfinite(v) and v >= 0 for v in sig) or \
                any(b >= a for a, b in zip(sig, sig[1:])) or sig[-2] <= 0:
            raise ValueError(f"Plan.sigmas must be at least two finite levels >= 0, strictly decreasing, only the "
                             f"last may be 0; got {list(self.sigmas)}")
        object.__setattr__(self, "sigmas", sig)
        if isinstance(self.nfe, bool) or not isinstance(self.nfe, numbers.Integral) or self.nfe < 1:
            raise ValueError(f"Plan.nfe must be a positive integer, got {self.nfe!r}")
        object.__setattr__(self, "nfe", int(self.nfe))
        if self.path is not None and not isinstance(self.path, str):
            raise ValueError(f"Plan.path must be a path name or None, got {self.path!r}")
        for name in ("options", "cost", "fitted"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"Plan.{name} must be a dict, got {getattr(self, name)!r}")
        seeds = tuple(self.seeds)
        if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and 0 <= s < 2**63 for s in seeds):
            raise ValueError(f"Plan.seeds must be integers in [0, 2**63), got {list(self.seeds)[:8]}")
        object.__setattr__(self, "seeds", tuple(int(s) for s in seeds))

    @property
    def final(self) -> str:
        """``"zero"`` when the last step denoises to 0, else ``"s_min"``."""
        return "zero" if self.sigmas[-1] == 0 else "s_min"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sigmas"], d["seeds"] = list(self.sigmas), list(self.seeds)
        return {"format": PLAN_FORMAT, **d}

    def to_json(self) -> str:
        """The plan as JSON text (levels written with Python's shortest exact float repr)."""
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Plan":
        if not isinstance(d, dict) or d.get("format") != PLAN_FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"not a diffsolve plan (format {got!r}; expected {PLAN_FORMAT!r})")
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known - {"format"})
        if unknown:
            raise ValueError(f"unknown plan field(s) {', '.join(unknown)}; accepted: {', '.join(sorted(known))}")
        return cls(**{k: v for k, v in d.items() if k != "format"})

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"plan JSON does not parse: {e}") from None
        return cls.from_dict(d)

    def save(self, file: str) -> str:
        """Write the plan to ``file`` atomically (a crash never leaves half a plan); returns it."""
        text = self.to_json()
        atomic_write(file, lambda tmp: open(tmp, "w").write(text))
        return file

    @classmethod
    def load(cls, file: str) -> "Plan":
        """Read a plan written by :meth:`save`, or a shipped one by name (:func:`shipped_plans`:
        ``mnist-g1.25-nfe5``, LD3-tuned for the shipped MNIST model with CFG 1.25 at 5 NFE); a file
        that is not a plan is refused with its path."""
        if not os.path.exists(file) and file in shipped_plans():
            file = os.path.join(PLANS_DIR, file + ".plan.json")
        elif not os.path.exists(file):
            raise FileNotFoundError(f"{file}: no such plan file; shipped plans: {', '.join(shipped_plans()) or 'none'}")
        try:
            with open(file) as f:
                text = f.read()
        except OSError as e:
            raise FileNotFoundError(f"{file}: cannot read plan ({e.strerror})") from None
        try:
            return cls.from_json(text)
        except ValueError as e:
            raise ValueError(f"{file}: {e}") from None


def _raise(v: Any) -> bool:
    raise TypeError(v)
