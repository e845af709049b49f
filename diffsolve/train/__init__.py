"""Training small diffusion / flow models: losses for every prediction type on any path, and a
resumable loop with EMA and label dropout. See :mod:`diffsolve.train.loop` and ``diffsolve train``."""

from .loop import TrainConfig, train, ema_update
from .losses import diffusion_loss, sample_levels, WEIGHTINGS, NOISE_DISTS
from .presets import PRESETS, preset

__all__ = ["TrainConfig", "train", "ema_update", "diffusion_loss", "sample_levels", "WEIGHTINGS",
           "NOISE_DISTS", "PRESETS", "preset"]
