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

Template: :mod:`diffsolve.train.verifier` (the clean steering classifier).  Its helpers are
reused, not copied: ``random_shift``, ``evaluate``, the learning-rate schedule ``_lr`` and the
state reader ``_load_state`` (which gained a ``fmt`` argument for this trainer).  Resumable:
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

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import mnist
from ..io import atomic_write, atomic_write_json, atomic_write_text, remove_orphans
from ..nets.noisy_classifier import NoisyClassifier
from ..paths import get_path
from .config import config_differences, require_int, require_real
from .losses import sample_levels
from .verifier import _load_state, _lr, evaluate, random_shift

__all__ = ["NoisyClassifierConfig", "train_noisy_classifier", "export_noisy_classifier", "accuracy_by_level",
           "FORMAT", "SHIPPED_NAME", "EVAL_LEVELS"]

FORMAT = "diffsolve-noisy-classifier/1"
SHIPPED_NAME = "mnist-noisy-classifier"
_MODEL = "noisy-classifier"
#: the levels the finished network is measured at (canonical s; 0 = clean)
EVAL_LEVELS = (0.0, 0.5, 1.0, 2.0, 5.0)


@dataclass
class NoisyClassifierConfig:
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

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["arch_kwargs"] = {k: list(v) if isinstance(v, tuple) else v for k, v in d["arch_kwargs"].items()}
        return d

    def check(self) -> None:
        if not isinstance(self.arch_kwargs, dict):
            raise TypeError(f"arch_kwargs must be a dict, got {type(self.arch_kwargs).__name__}")
        for name, low in (("seed", 0), ("steps", 1), ("batch_size", 1), ("warmup", 0), ("max_shift", 0),
                          ("threads", 1)):
            require_int(name, getattr(self, name), low)
        require_real("lr", self.lr, "> 0", lambda v: v > 0)
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
    require_int("ckpt_every", ckpt_every, 1)
    require_int("log_every", log_every, 1)
    if max_seconds is not None:
        require_real("max_seconds", max_seconds, ">= 0", lambda v: v >= 0)
    if eval_n is not None:
        require_int("eval_n", eval_n, 1)
    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"out_dir must be a directory path, got {type(out_dir).__name__}")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"out_dir {out_dir!r} is a file; pass a directory (new or one to resume)")
    torch.set_num_threads(cfg.threads)
    os.makedirs(out_dir, exist_ok=True)
    orphans = remove_orphans(out_dir)
    path = get_path(cfg.path)

    torch.manual_seed(cfg.seed)
    try:
        net = NoisyClassifier(**cfg.arch_kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"arch_kwargs {cfg.arch_kwargs} do not fit NoisyClassifier: {e}") from None
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    step, elapsed, losses, window = 0, 0.0, [], []
    state_path = os.path.join(out_dir, "state.pt")
    if resume and os.path.exists(state_path):
        st = _load_state(state_path, FORMAT, "noisy-classifier")
        diff = config_differences(st["config"], cfg.to_dict(), ignore=("threads",))
        if diff:
            raise ValueError(f"{state_path} was written by another configuration ({'; '.join(diff)}, "
                             "checkpoint -> now); use a new out_dir, resume=False, or the checkpoint's settings")
        net.load_state_dict(st["net"])
        opt.load_state_dict(st["opt"])
        gen.set_state(st["gen"])
        step, elapsed, losses, window = st["step"], st["elapsed"], st["losses"], st["window"]
    else:
        for ext in (".json", ".safetensors"):
            if os.path.exists(os.path.join(out_dir, _MODEL + ext)):
                os.unlink(os.path.join(out_dir, _MODEL + ext))
    atomic_write_text(os.path.join(out_dir, "log.jsonl"),
                      "".join(json.dumps({"step": a, "loss": b, "seconds": c}) + "\n" for a, b, c in losses))

    def checkpoint() -> None:
        atomic_write(state_path, lambda tmp: torch.save(
            {"format": FORMAT, "config": cfg.to_dict(), "net": net.state_dict(), "opt": opt.state_dict(),
             "gen": gen.get_state(), "step": step, "elapsed": elapsed, "losses": losses, "window": window}, tmp))

    x, y = mnist("train")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=step, unit="step", desc="train noisy classifier")
    t_start, base_elapsed = time.time(), elapsed
    n = x.shape[0]
    net.train()
    while step < cfg.steps:
        if max_seconds is not None and time.time() - t_start >= max_seconds:
            break
        idx = torch.randint(n, (cfg.batch_size,), generator=gen)
        x0 = random_shift(x[idx], cfg.max_shift, gen)
        _, s = sample_levels(path, cfg.batch_size, gen, "lognormal", cfg.p_mean, cfg.p_std)
        clean = torch.rand(cfg.batch_size, generator=gen, dtype=torch.float64) < cfg.clean_frac
        s = torch.where(clean, torch.full_like(s, path.s_min), s).float()
        yb = x0 + s[:, None, None, None] * torch.randn(x0.shape, generator=gen)   # canonical y = x0 + s eps
        for g in opt.param_groups:
            g["lr"] = _lr(cfg, step)
        loss = F.cross_entropy(net(yb, s), y[idx])
        if not bool(torch.isfinite(loss)):
            raise FloatingPointError(f"non-finite loss at step {step}; lower lr (now {cfg.lr})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        elapsed = base_elapsed + time.time() - t_start
        window.append(loss.item())
        if step % log_every == 0:
            mean = sum(window) / len(window)
            window.clear()
            losses.append([step, mean, round(elapsed, 1)])
            with open(os.path.join(out_dir, "log.jsonl"), "a") as f:
                f.write(json.dumps({"step": step, "loss": mean, "seconds": round(elapsed, 1)}) + "\n")
            if bar is not None:
                bar.set_postfix(loss=f"{mean:.4f}")
        if bar is not None:
            bar.update(1)
        if step % ckpt_every == 0:
            checkpoint()
    if bar is not None:
        bar.close()
    checkpoint()
    res: dict[str, Any] = {"step": step, "seconds": elapsed, "params": sum(p.numel() for p in net.parameters()),
                           "out_dir": out_dir, "removed_orphans": orphans, "accuracy": None}
    if step >= cfg.steps:
        res["accuracy"] = _write_model(cfg, net, out_dir, step, elapsed, command, eval_n)
    return res


def _write_model(cfg: NoisyClassifierConfig, net: nn.Module, out_dir: str, step: int, elapsed: float,
                 command: str | None, eval_n: int | None) -> dict[str, float]:
    from safetensors.torch import save_file

    xt, yt = mnist("test")
    if eval_n is not None:
        xt, yt = xt[:eval_n], yt[:eval_n]
    acc = accuracy_by_level(net, xt, yt)
    state = {k: v.detach().to(torch.float32).contiguous() for k, v in net.state_dict().items()}
    atomic_write(os.path.join(out_dir, _MODEL + ".safetensors"), lambda tmp: save_file(state, tmp))
    atomic_write_json(os.path.join(out_dir, _MODEL + ".json"), {
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
    from ..models.checkpoint import WEIGHTS_DIR

    src = {ext: os.path.join(out_dir, _MODEL + ext) for ext in (".safetensors", ".json")}
    missing = [p for p in src.values() if not os.path.exists(p)]
    if missing:
        raise FileNotFoundError(f"{missing[0]} missing: the run in {out_dir} has not finished; "
                                "rerun the same training call to finish it")
    for ext, p in src.items():
        atomic_write(os.path.join(WEIGHTS_DIR, name + ext), lambda tmp, p=p: shutil.copyfile(p, tmp))
    return os.path.join(WEIGHTS_DIR, name + ".json")
