"""Training the noise-conditional MNIST classifier (:class:`diffsolve.nets.noisy_classifier.NoisyClassifier`)
that classifier guidance reads (:class:`diffsolve.guidance.ClassifierGuidance`), resumably.

    OMP_NUM_THREADS=1 nice -n 10 python -c "from diffsolve.train.noisy_classifier import *; \\
        train_noisy_classifier(NoisyClassifierConfig(), 'runs/ncls'); export_noisy_classifier('runs/ncls')"

Each batch draws MNIST training images (data range [-1, 1], shifted by up to ``max_shift``
pixels), one noise level per image from the MNIST diffusion model's own training distribution
(the ``mnist`` preset: EDM's log-normal ``ln s ~ N(p_mean, p_std^2)`` clipped to the EDM path's
[s_min, s_max] = [0.002, 80], :func:`diffsolve.train.losses.sample_levels`), and forms the
canonical noisy state ``y = x0 + s eps``; the network sees ``y / sqrt(sigma_data^2 + s^2)`` and
``c_noise = ln(s) / 4`` (its own preconditioning), and is trained by cross-entropy.  On a
fraction ``clean_frac`` of the images s is set to the path's s_min (near-clean), so that the
classifier is reliable at the end of sampling too.

The loop is :func:`diffsolve.train.classifier.train_classifier`, shared with the clean steering
verifier (:mod:`diffsolve.train.verifier`); this module gives it the noisy batch.  Resumable:
network, optimizer, generator and step are checkpointed atomically every ``ckpt_every`` steps;
a killed run resumed reproduces the uninterrupted run (one thread).

    >>> import tempfile
    >>> cfg = NoisyClassifierConfig(steps=2, batch_size=8, arch_kwargs={"stem": 4, "widths": [8], "groups": 4, "emb_dim": 8})
    >>> with tempfile.TemporaryDirectory() as d:
    ...     res = train_noisy_classifier(cfg, d, progress=False, eval_n=50)
    >>> res["step"], sorted(res["accuracy"])
    (2, ['0', '0.5', '1', '2', '5'])
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import mnist
from ..nets.noisy_classifier import NoisyClassifier
from ..paths import get_path
from .classifier import ClassifierConfig, evaluate, export_model_files, train_classifier, write_model_files
from .config import require_real
from .losses import sample_levels

__all__ = ["NoisyClassifierConfig", "train_noisy_classifier", "export_noisy_classifier", "accuracy_by_level",
           "FORMAT", "SHIPPED_NAME", "EVAL_LEVELS"]

FORMAT = "diffsolve-noisy-classifier/1"
SHIPPED_NAME = "mnist-noisy-classifier"
_MODEL = "noisy-classifier"
#: the levels the finished network is measured at (canonical s; 0 = clean)
EVAL_LEVELS = (0.0, 0.5, 1.0, 2.0, 5.0)


@dataclass
class NoisyClassifierConfig(ClassifierConfig):
    """Everything that defines a run (saved in the state and the JSON).  ``p_mean``, ``p_std``
    and ``path`` are the MNIST diffusion preset's level distribution."""

    arch_kwargs: dict = field(default_factory=lambda: {"stem": 16, "widths": [32, 64], "groups": 8, "emb_dim": 64})
    seed: int = 2
    steps: int = 1500            # the shipped run: 1500 x 64 fits 15 minutes on one shared, niced thread
    batch_size: int = 64
    lr: float = 3e-3
    warmup: int = 100
    max_shift: int = 1
    path: str = "edm"
    p_mean: float = -1.2
    p_std: float = 1.2
    clean_frac: float = 0.1
    threads: int = 1

    def check(self) -> None:
        self._check_common()
        require_real("p_std", self.p_std, "> 0", lambda v: v > 0)
        require_real("p_mean", self.p_mean, "", lambda v: True)
        require_real("clean_frac", self.clean_frac, "in [0, 1]", lambda v: 0 <= v <= 1)
        get_path(self.path)


class _AtLevel(nn.Module):
    """``net(y, s)`` at one fixed level, as the one-argument module :func:`evaluate` takes."""

    def __init__(self, net: nn.Module, s: float):
        super().__init__()
        self.net, self.s = net, s

    def forward(self, y: Tensor) -> Tensor:
        return self.net(y, self.s)


def accuracy_by_level(net: nn.Module, x: Tensor, labels: Tensor, levels=EVAL_LEVELS, seed: int = 0) -> dict[str, float]:
    """Test accuracy of ``net`` on ``y = x + s eps`` (fixed noise, ``seed``) at each level s,
    keyed by ``f"{s:g}"``."""
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(x.shape, generator=g)
    return {f"{s:g}": evaluate(_AtLevel(net, float(s)), x + s * eps, labels) for s in levels}


def train_noisy_classifier(cfg: NoisyClassifierConfig, out_dir: str, *, resume: bool = True, progress: bool = True,
                           ckpt_every: int = 200, log_every: int = 50, max_seconds: float | None = None,
                           command: str | None = None, eval_n: int | None = None) -> dict[str, Any]:
    """Train (or resume) into ``out_dir`` (``state.pt``, ``log.jsonl``, and at the end
    ``noisy-classifier.safetensors`` / ``.json``); returns step, seconds, params, accuracy (by
    level, when finished).  Stops at ``cfg.steps`` or after ``max_seconds`` (checkpointed; the
    same call resumes).  A state of another configuration is refused, naming the differences."""
    if not isinstance(cfg, NoisyClassifierConfig):
        raise TypeError(f"cfg must be a NoisyClassifierConfig, got {type(cfg).__name__}")
    cfg.check()
    path = get_path(cfg.path)

    def batch_loss(net: nn.Module, x0: Tensor, labels: Tensor, step: int, gen: torch.Generator) -> Tensor:
        _, s = sample_levels(path, cfg.batch_size, gen, "lognormal", cfg.p_mean, cfg.p_std)
        clean = torch.rand(cfg.batch_size, generator=gen, dtype=torch.float64) < cfg.clean_frac
        s = torch.where(clean, torch.full_like(s, path.s_min), s).float()
        yb = x0 + s[:, None, None, None] * torch.randn(x0.shape, generator=gen)   # canonical y = x0 + s eps
        return F.cross_entropy(net(yb, s), labels)

    # clock=time.time is read at call time, so a test that patches this module's ``time`` is obeyed
    return train_classifier(
        cfg, out_dir, NoisyClassifier, batch_loss,
        lambda net, step, elapsed: _write_model(cfg, net, out_dir, step, elapsed, command, eval_n),
        fmt=FORMAT, what="noisy-classifier", model=_MODEL, desc="train noisy classifier", resume=resume,
        progress=progress, ckpt_every=ckpt_every, log_every=log_every, max_seconds=max_seconds, eval_n=eval_n,
        clock=time.time)


def _write_model(cfg: NoisyClassifierConfig, net: nn.Module, out_dir: str, step: int, elapsed: float,
                 command: str | None, eval_n: int | None) -> dict[str, float]:
    xt, yt = mnist("test")
    if eval_n is not None:
        xt, yt = xt[:eval_n], yt[:eval_n]
    acc = accuracy_by_level(net, xt, yt)
    write_model_files(out_dir, _MODEL, net, {
        "format": FORMAT,
        "arch": "NoisyClassifier",
        "arch_kwargs": cfg.to_dict()["arch_kwargs"],
        "seed": cfg.seed,
        "steps": step,
        "test_accuracy_by_level": acc,
        "test_images": len(xt),
        "eval_noise_seed": 0,
        "training_seconds": round(elapsed, 1),
        "threads": cfg.threads,
        "torch": torch.__version__,
        "params": sum(p.numel() for p in net.parameters()),
        "input": {"space": "canonical y = x0 + s * eps (x0 in [-1, 1]), s >= 0; the network scales y by "
                           "1/sqrt(sigma_data^2 + s^2) and embeds ln(max(s, s_floor))/4",
                  "shape": [1, 28, 28]},
        "levels": {"dist": "lognormal", "p_mean": cfg.p_mean, "p_std": cfg.p_std, "path": cfg.path,
                   "clean_frac": cfg.clean_frac},
        "config": cfg.to_dict(),
        "command": command,
    })
    return acc


def export_noisy_classifier(out_dir: str, name: str = SHIPPED_NAME) -> str:
    """Copy a finished run's weights and JSON to ``diffsolve/models/weights/NAME.*`` (weights
    first); returns the JSON's path.  An unfinished run is refused."""
    return export_model_files(out_dir, _MODEL, name, "call")
