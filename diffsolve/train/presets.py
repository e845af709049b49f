"""The recipes of the shipped models: ``diffsolve train --preset NAME`` reproduces them.

Sizes were chosen by measuring what trains in reasonable time on 2 shared CPU cores with one
thread per run (see docs/models.md for the timings).

    >>> from diffsolve.train import preset
    >>> preset("moons").prediction
    'velocity'
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .config import TrainConfig

__all__ = ["PRESETS", "preset"]

_MLP_2D = {"dim": 2, "hidden": 128, "depth": 3}

PRESETS: dict[str, TrainConfig] = {
    # MNIST 28x28, class-conditional, EDM preconditioning and log-normal noise levels (Karras et al. 2022);
    # widths 16/32/64 at 28/14/7 px, attention at 7x7: ~0.72M parameters, ~1.5-2 s per step of 64.
    "mnist": TrainConfig(
        data="mnist", data_split="train+valid", arch="unet",
        arch_kwargs={"channels": 16, "channel_mults": [1, 2, 4], "num_res_blocks": 1, "attn_levels": [2]},
        path="edm", prediction="edm", noise_dist="lognormal", sigma_data=0.5, conditional=True,
        label_dropout=0.1, batch_size=64, lr=1.5e-3, warmup=200, steps=200_000, ema_decay=0.999),
    # scikit-learn 8x8 digits, class-conditional, classic DDPM (linear betas, eps prediction) with an
    # MLP on the flattened 64 pixels: trains in minutes (a UNet at 8x8 costs ~15x more per step).
    "digits": TrainConfig(
        data="digits", arch="mlp", arch_kwargs={"hidden": 256, "depth": 3},
        path="ddpm-linear", prediction="eps", noise_dist="uniform", conditional=True,
        label_dropout=0.1, batch_size=256, lr=2e-3, warmup=100, steps=3000, ema_decay=0.998),
    # 2-D toy sets: rectified flow / flow matching with a velocity network.
    "moons": TrainConfig(data="moons", arch="mlp", arch_kwargs=dict(_MLP_2D), path="flow", prediction="velocity",
                         batch_size=256, lr=2e-3, warmup=100, steps=3000, ema_decay=0.998),
    "rings": TrainConfig(data="rings", arch="mlp", arch_kwargs=dict(_MLP_2D), path="flow", prediction="velocity",
                         batch_size=256, lr=2e-3, warmup=100, steps=12000, ema_decay=0.998),
    "checker": TrainConfig(data="checker", arch="mlp", arch_kwargs=dict(_MLP_2D), path="flow", prediction="velocity",
                           batch_size=256, lr=2e-3, warmup=100, steps=12000, ema_decay=0.998),
}


def preset(name: str, **overrides: Any) -> TrainConfig:
    """A copy of a preset, with fields overridden; unknown names or fields and values that
    :meth:`TrainConfig.check` refuses raise ``ValueError`` naming what is accepted."""
    if not isinstance(name, str) or name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; accepted: {', '.join(PRESETS)}")
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"unknown TrainConfig field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                         f"accepted: {', '.join(fields)}")
    cfg = dataclasses.replace(PRESETS[name], **overrides)
    cfg.check()
    return cfg
