"""What defines a training run (:class:`TrainConfig`) and the check that refuses, before any
work, a run the loop cannot do, naming the field, the bad value and what is accepted.

    >>> TrainConfig(steps=0).check()
    Traceback (most recent call last):
    ...
    ValueError: steps must be an integer >= 1, got 0
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable

from ..data import DATASETS
from ..denoisers import PREDICTIONS
from ..nets import ARCHITECTURES
from ..paths import PATHS
from .losses import NOISE_DISTS, WEIGHTINGS

__all__ = ["TrainConfig", "DATA_SPLITS", "config_differences", "require_choice", "require_int", "require_real"]

#: accepted ``data_split`` values (MNIST's splits; the other data sets have one)
DATA_SPLITS = ("train", "valid", "train+valid", "test")


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved in the checkpoint's JSON)."""

    data: str = "moons"                      # a name from diffsolve.data.DATASETS
    data_split: str = "train"
    arch: str = "mlp"                        # "unet" or "mlp"
    arch_kwargs: dict = field(default_factory=dict)
    path: str = "flow"                       # a name from diffsolve.PATHS
    prediction: str = "velocity"             # eps, x0, v, velocity, score, or edm
    noise_dist: str = "uniform"              # "uniform" (t) or "lognormal" (s, EDM)
    p_mean: float = -1.2
    p_std: float = 1.2
    weighting: str = "none"                  # "none" or "min-snr"
    sigma_data: float = 0.5
    conditional: bool = False                # class-conditional with a null label
    label_dropout: float = 0.1               # probability of the null label (CFG training)
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple = (0.9, 0.999)
    warmup: int = 100
    grad_clip: float = 1.0
    steps: int = 1000
    ema_decay: float = 0.999
    seed: int = 0
    threads: int = 1
    init_from: str | None = None             # start from these weights (a shipped name or checkpoint): fine-tuning

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"] = list(d["betas"])
        return d

    def check(self) -> None:
        """Raise ``ValueError`` naming the first field the training loop cannot use."""
        for name, accepted in (("data", DATASETS), ("data_split", DATA_SPLITS), ("arch", tuple(ARCHITECTURES)),
                               ("path", tuple(PATHS)), ("prediction", PREDICTIONS), ("noise_dist", NOISE_DISTS),
                               ("weighting", WEIGHTINGS)):
            require_choice(name, getattr(self, name), accepted)
        if not isinstance(self.arch_kwargs, dict):
            raise ValueError(f"arch_kwargs must be a dict of keyword arguments of {self.arch!r}, got {self.arch_kwargs!r}")
        if self.init_from is not None and (not isinstance(self.init_from, str) or not self.init_from):
            raise ValueError(f"init_from must be a shipped model name or a checkpoint path, or None, got {self.init_from!r}")
        if not isinstance(self.conditional, bool):
            raise ValueError(f"conditional must be True or False, got {self.conditional!r}")
        require_int("steps", self.steps, 1)
        require_int("batch_size", self.batch_size, 1)
        require_int("warmup", self.warmup, 0)
        require_int("threads", self.threads, 1)
        require_int("seed", self.seed, 0, 2**63 - 1)
        require_real("lr", self.lr, "> 0", lambda v: v > 0)
        require_real("sigma_data", self.sigma_data, "> 0", lambda v: v > 0)
        require_real("p_std", self.p_std, "> 0", lambda v: v > 0)
        require_real("p_mean", self.p_mean, "", lambda v: True)
        require_real("weight_decay", self.weight_decay, ">= 0", lambda v: v >= 0)
        require_real("grad_clip", self.grad_clip, ">= 0 (0 = no clipping)", lambda v: v >= 0)
        require_real("ema_decay", self.ema_decay, "in [0, 1)", lambda v: 0 <= v < 1)
        require_real("label_dropout", self.label_dropout, "in [0, 1)", lambda v: 0 <= v < 1)
        betas = self.betas
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2 and all(_is_real(b) and 0 <= b < 1 for b in betas)):
            raise ValueError(f"betas must be two numbers in [0, 1) (Adam's beta1, beta2), got {betas!r}")


def config_differences(old: dict, new: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """``"field: OLD -> NEW"`` for each field (of two :meth:`TrainConfig.to_dict` results) that
    differs, ``ignore`` aside."""
    keys = sorted((set(old) | set(new)) - set(ignore))
    return [f"{k}: {old.get(k, '(absent)')!r} -> {new.get(k, '(absent)')!r}" for k in keys if old.get(k) != new.get(k)]


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def require_choice(name: str, value: Any, accepted: tuple[str, ...]) -> None:
    """Refuse a ``value`` of ``name`` that is not one of the ``accepted`` strings."""
    if not isinstance(value, str) or value not in accepted:
        raise ValueError(f"unknown {name} {value!r}; accepted: {', '.join(accepted)}")


def require_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    """Refuse a ``value`` of ``name`` that is not an integer (bools are not) in ``low..high``."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and low <= value
    if not ok or (high is not None and value > high):
        rng = f">= {low}" if high is None else f"in {low}..{high}"
        raise ValueError(f"{name} must be an integer {rng}, got {value!r}")


def require_real(name: str, value: Any, rule: str, ok: Callable[[float], bool]) -> None:
    """Refuse a ``value`` of ``name`` that is not a finite real number with ``ok(value)``
    (``rule`` says which, e.g. ``"> 0"``)."""
    if not _is_real(value) or not ok(value):
        raise ValueError(f"{name} must be a finite number{' ' + rule if rule else ''}, got {value!r}")
