"""Training the steering verifier (:class:`diffsolve.nets.verifier.ResidualVerifier`), resumably.

    diffsolve train-verifier --out runs/verifier --export

The network learns to classify the 50,000 MNIST training images in the diffusion model's data
range [-1, 1]; the 10,000 test images are only measured at the end.  Every batch is shifted by
up to ``max_shift`` pixels (background -1); every second batch also gets Gaussian noise whose
std is drawn per image uniformly in [0, ``noise_max``], so that the input gradient stays
informative on slightly imperfect images (what guidance feeds it).  Adam, linear warm-up then
cosine decay of the learning rate to zero.

All randomness of a step (batch indices, shifts, noise) comes from one ``torch.Generator``
whose state is checkpointed with the network, the optimizer and the step counter, so a run
killed and resumed reproduces the uninterrupted run's weights (on one thread, one torch
version).  The loop is :func:`diffsolve.train.classifier.train_classifier`, shared with the
noise-conditional classifier (:mod:`diffsolve.train.noisy_classifier`); this module gives it the batch.

Files in ``out_dir``:

* ``state.pt``: everything to resume (written atomically every ``ckpt_every`` steps and at the
  end);
* ``log.jsonl``: one line per ``log_every`` steps: step, mean loss, wall time;
* ``verifier.safetensors`` / ``verifier.json``: written when the run finishes: the float32
  weights and what made them (architecture kwargs, seed, steps, test accuracy, training
  seconds, torch version).  :func:`export_verifier` copies them to the shipped weights.

    >>> import tempfile
    >>> cfg = VerifierConfig(steps=2, batch_size=8, arch_kwargs={"stem": 4, "widths": [8], "groups": 4})
    >>> with tempfile.TemporaryDirectory() as d:
    ...     res = train_verifier(cfg, d, progress=False, eval_n=100)
    >>> res["step"], sorted(res["accuracy"])
    (2, ['test', 'test_first_1000'])
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import mnist
from ..nets.verifier import ResidualVerifier
from .classifier import (ClassifierConfig, evaluate, export_model_files, random_shift, train_classifier,
                         write_model_files)
from .config import require_real

__all__ = ["VerifierConfig", "train_verifier", "export_verifier", "random_shift", "evaluate", "FORMAT",
           "SHIPPED_NAME"]

FORMAT = "diffsolve-verifier/1"
#: the shipped weights' name in diffsolve/models/weights (NAME.safetensors, NAME.json)
SHIPPED_NAME = "mnist-verifier"
_MODEL = "verifier"  # the run directory's model files: verifier.safetensors, verifier.json


@dataclass
class VerifierConfig(ClassifierConfig):
    """Everything that defines a verifier training run (saved in the state and the JSON)."""

    arch_kwargs: dict = field(default_factory=lambda: {"stem": 16, "widths": [32, 64], "groups": 8})
    seed: int = 1                 # the metric network's is 0
    steps: int = 2400
    batch_size: int = 128
    lr: float = 3e-3
    warmup: int = 100
    max_shift: int = 2            # pixels
    noise_max: float = 0.3        # std in the [-1, 1] data scale, drawn uniformly in [0, noise_max]
    noise_every: int = 2          # noise on the batches with step % noise_every == noise_every - 1
    threads: int = 1

    def check(self) -> None:
        """Refuse a field the trainer cannot use, naming it and what is accepted."""
        self._check_common(("noise_every", 1))
        require_real("noise_max", self.noise_max, ">= 0", lambda v: v >= 0)


def train_verifier(cfg: VerifierConfig, out_dir: str, *, resume: bool = True, progress: bool = True,
                   ckpt_every: int = 200, log_every: int = 50, max_seconds: float | None = None,
                   command: str | None = None, eval_n: int | None = None) -> dict[str, Any]:
    """Train (or resume) the verifier described by ``cfg`` into ``out_dir``; returns a summary
    (step, seconds, params, accuracy (when finished), out_dir, removed_orphans).

    Stops at ``cfg.steps`` (then measures the test accuracy and writes ``verifier.*``) or after
    ``max_seconds`` (then only checkpoints; the same call resumes).  Resuming from a
    ``state.pt`` of another configuration is refused, naming the differing fields.
    ``eval_n`` measures on the first ``eval_n`` test images only (for quick tests)."""
    if not isinstance(cfg, VerifierConfig):
        raise TypeError(f"cfg must be a VerifierConfig, got {type(cfg).__name__}")
    cfg.check()

    def batch_loss(net: nn.Module, xb: Tensor, labels: Tensor, step: int, gen: torch.Generator) -> Tensor:
        if cfg.noise_max > 0 and step % cfg.noise_every == cfg.noise_every - 1:
            std = torch.rand(cfg.batch_size, 1, 1, 1, generator=gen) * cfg.noise_max
            xb = xb + std * torch.randn(xb.shape, generator=gen)
        return F.cross_entropy(net(xb), labels)

    # clock=time.time is read at call time, so a test that patches this module's ``time`` is obeyed
    return train_classifier(
        cfg, out_dir, ResidualVerifier, batch_loss,
        lambda net, step, elapsed: _write_model(cfg, net, out_dir, step, elapsed, command, eval_n),
        fmt=FORMAT, what="verifier", model=_MODEL, desc="train verifier", resume=resume, progress=progress,
        ckpt_every=ckpt_every, log_every=log_every, max_seconds=max_seconds, eval_n=eval_n, clock=time.time)


def _write_model(cfg: VerifierConfig, net: nn.Module, out_dir: str, step: int, elapsed: float,
                 command: str | None, eval_n: int | None) -> dict[str, float]:
    """Measure the finished network and write ``verifier.safetensors`` then ``verifier.json``."""
    xt, yt = mnist("test")
    if eval_n is not None:
        xt, yt = xt[:eval_n], yt[:eval_n]
    acc = {"test": evaluate(net, xt, yt), "test_first_1000": evaluate(net, xt[:1000], yt[:1000])}
    write_model_files(out_dir, _MODEL, net, {
        "format": FORMAT,
        "arch": "ResidualVerifier",
        "arch_kwargs": cfg.to_dict()["arch_kwargs"],
        "seed": cfg.seed,
        "steps": step,
        "test_accuracy": acc["test"],
        "test_accuracy_first_1000": acc["test_first_1000"],
        "test_images": len(xt),
        "training_seconds": round(elapsed, 1),
        "threads": cfg.threads,
        "torch": torch.__version__,
        "params": sum(p.numel() for p in net.parameters()),
        "input": {"shape": [1, 28, 28], "value_range": [-1.0, 1.0]},
        "config": cfg.to_dict(),
        "command": command,
    })
    return acc


def export_verifier(out_dir: str, name: str = SHIPPED_NAME) -> str:
    """Copy a finished run's ``verifier.safetensors`` and ``verifier.json`` to the shipped
    weights (``diffsolve/models/weights/NAME.*``, weights first so that a JSON never points at
    missing weights); returns the JSON's path.  An unfinished run is refused."""
    return export_model_files(out_dir, _MODEL, name, "command")
