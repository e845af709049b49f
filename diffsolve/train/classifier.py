"""The resumable training of an MNIST classifier, shared by the clean steering verifier
(:mod:`diffsolve.train.verifier`) and the noise-conditional classifier
(:mod:`diffsolve.train.noisy_classifier`).

:func:`train_classifier` owns everything but the batch: the loop-argument checks, ``out_dir``
(orphan removal, ``state.pt``, ``log.jsonl``), resuming with the configuration check, Adam with
a linear warm-up then cosine decay (:func:`cosine_lr`), the non-finite-loss check, the loss
window, the progress bar and the periodic and final checkpoints.  Each step draws
``batch_size`` training images and shifts them by up to ``cfg.max_shift`` pixels
(:func:`random_shift`); the trainer's ``batch_loss`` turns them into the
loss (the verifier: optional noise on clean images; the noisy classifier: a noise level per
image).  All randomness comes from one ``torch.Generator`` checkpointed with the network,
the optimizer and the step, so a killed and resumed run reproduces the uninterrupted one (one
thread, one torch version).

``state.pt`` holds ``format``, ``config``, ``net``, ``opt``, ``gen``, ``step``, ``elapsed``,
``losses``, ``window``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import mnist
from ..io import atomic_write, atomic_write_json
from .config import require_int, require_real
from .rundir import check_resume_config, log_window, prepare_out_dir, progress_bar, read_state, rewrite_log

__all__ = ["ClassifierConfig", "train_classifier", "random_shift", "evaluate", "cosine_lr", "load_state",
           "write_model_files", "export_model_files"]


class ClassifierConfig:
    """What the classifier trainers' dataclass configurations share (a mixin without fields, so
    each dataclass keeps its own field order): ``to_dict`` and the checks of the common fields."""

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["arch_kwargs"] = {k: list(v) if isinstance(v, tuple) else v for k, v in d["arch_kwargs"].items()}
        return d

    def _check_common(self, *more_ints: tuple[str, int]) -> None:
        """Refuse a bad ``arch_kwargs``, integer field (``more_ints``: further (name, lowest)
        pairs, checked before ``threads``) or ``lr``, naming it and what is accepted."""
        if not isinstance(self.arch_kwargs, dict):
            raise TypeError(f"arch_kwargs must be a dict, got {type(self.arch_kwargs).__name__}")
        for name, low in (("seed", 0), ("steps", 1), ("batch_size", 1), ("warmup", 0), ("max_shift", 0),
                          *more_ints, ("threads", 1)):
            require_int(name, getattr(self, name), low)
        require_real("lr", self.lr, "> 0", lambda v: v > 0)


def random_shift(x: Tensor, max_shift: int, g: torch.Generator) -> Tensor:
    """Translate each image by an integer offset in [-max_shift, max_shift]^2 (background -1).

    >>> x = torch.full((1, 1, 3, 3), -1.0); x[0, 0, 1, 1] = 1.0
    >>> float(random_shift(x, 1, torch.Generator().manual_seed(0)).sum()) == float(x.sum())
    True
    """
    if max_shift == 0:
        return x
    B, _, H, W = x.shape
    xp = F.pad(x, (max_shift,) * 4, value=-1.0)
    dy = torch.randint(0, 2 * max_shift + 1, (B,), generator=g)
    dx = torch.randint(0, 2 * max_shift + 1, (B,), generator=g)
    rows = (dy[:, None] + torch.arange(H))[:, :, None]
    cols = (dx[:, None] + torch.arange(W))[:, None, :]
    return xp[torch.arange(B)[:, None, None], 0, rows, cols][:, None]


@torch.no_grad()
def evaluate(net: nn.Module, x: Tensor, y: Tensor, batch: int = 1000) -> float:
    """Fraction of the images ``x`` that ``net`` assigns to their labels ``y`` (eval mode)."""
    was = net.training
    net.eval()
    pred = torch.cat([net(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])
    net.train(was)
    return float((pred == y).double().mean())


def cosine_lr(cfg: Any, step: int) -> float:
    """``cfg.lr`` with a linear warm-up over ``cfg.warmup`` steps, then cosine decay to zero at
    ``cfg.steps``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))


def load_state(path: str, fmt: str, what: str) -> dict:
    """The training state at ``path``, refused unless it was written by a ``fmt`` trainer
    (``what`` names it in the message)."""
    st = read_state(path)
    if not isinstance(st, dict) or st.get("format") != fmt or not isinstance(st.get("config"), dict):
        raise ValueError(f"{path}: not a {what} training state; use a new out_dir or resume=False")
    return st


def train_classifier(cfg: Any, out_dir: str, arch: type[nn.Module],
                     batch_loss: Callable[[nn.Module, Tensor, Tensor, int, torch.Generator], Tensor],
                     write_model: Callable[[nn.Module, int, float], Any], *, fmt: str, what: str, model: str,
                     desc: str, resume: bool, progress: bool, ckpt_every: int, log_every: int,
                     max_seconds: float | None, eval_n: int | None,
                     clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """Train (or resume) ``arch(**cfg.arch_kwargs)`` into ``out_dir``; returns the trainers'
    summary (step, seconds, params, out_dir, removed_orphans, accuracy).

    ``cfg`` is a checked configuration with ``seed``, ``steps``, ``batch_size``, ``lr``,
    ``warmup``, ``max_shift``, ``threads``, ``arch_kwargs`` and ``to_dict()``.
    ``batch_loss(net, x0, labels, step, gen)`` is the loss of the shifted training images ``x0``
    with their ``labels``, drawing any randomness from ``gen``.  ``fmt`` is the state's format
    string, ``what`` names the trainer in messages, ``model`` is the stem of the model files
    (``model.safetensors`` / ``model.json``) that a fresh run removes and ``write_model(net,
    step, elapsed)`` writes when ``cfg.steps`` are done (its value is the summary's accuracy),
    ``desc`` labels the progress bar, ``clock`` is the wall clock (the trainer's
    ``time.time``).  ``eval_n`` is only checked here (``write_model`` uses it)."""
    require_int("ckpt_every", ckpt_every, 1)
    require_int("log_every", log_every, 1)
    if max_seconds is not None:
        require_real("max_seconds", max_seconds, ">= 0", lambda v: v >= 0)
    if eval_n is not None:
        require_int("eval_n", eval_n, 1)
    orphans = prepare_out_dir(out_dir, cfg.threads)

    torch.manual_seed(cfg.seed)
    try:
        net = arch(**cfg.arch_kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"arch_kwargs {cfg.arch_kwargs} do not fit {arch.__name__}: {e}") from None
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    step, elapsed, losses, window = 0, 0.0, [], []
    state_path = os.path.join(out_dir, "state.pt")
    if resume and os.path.exists(state_path):
        st = load_state(state_path, fmt, what)
        check_resume_config(state_path, st["config"], cfg.to_dict(), ("threads",))
        net.load_state_dict(st["net"])
        opt.load_state_dict(st["opt"])
        gen.set_state(st["gen"])
        step, elapsed, losses, window = st["step"], st["elapsed"], st["losses"], st["window"]
    else:  # a fresh run: the model files of an earlier run in this directory are not its
        for ext in (".json", ".safetensors"):
            if os.path.exists(os.path.join(out_dir, model + ext)):
                os.unlink(os.path.join(out_dir, model + ext))
    rewrite_log(out_dir, losses)

    def checkpoint() -> None:
        atomic_write(state_path, lambda tmp: torch.save(
            {"format": fmt, "config": cfg.to_dict(), "net": net.state_dict(), "opt": opt.state_dict(),
             "gen": gen.get_state(), "step": step, "elapsed": elapsed, "losses": losses, "window": window}, tmp))

    x, y = mnist("train")
    bar = progress_bar(progress, cfg.steps, step, desc)
    t_start, base_elapsed = clock(), elapsed
    n = x.shape[0]
    net.train()
    while step < cfg.steps:
        if max_seconds is not None and clock() - t_start >= max_seconds:
            break
        idx = torch.randint(n, (cfg.batch_size,), generator=gen)
        x0 = random_shift(x[idx], cfg.max_shift, gen)
        for g in opt.param_groups:
            g["lr"] = cosine_lr(cfg, step)
        loss = batch_loss(net, x0, y[idx], step, gen)
        if not bool(torch.isfinite(loss)):
            raise FloatingPointError(f"non-finite loss at step {step}; lower lr (now {cfg.lr})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        elapsed = base_elapsed + clock() - t_start
        window.append(loss.item())
        if step % log_every == 0:
            log_window(out_dir, step, elapsed, window, losses, bar)
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
        res["accuracy"] = write_model(net, step, elapsed)
    return res


def write_model_files(out_dir: str, model: str, net: nn.Module, meta: dict) -> None:
    """Write the finished ``net``'s float32 weights to ``model.safetensors`` then ``meta`` to
    ``model.json`` (in ``out_dir``, atomically, weights first)."""
    from safetensors.torch import save_file

    state = {k: v.detach().to(torch.float32).contiguous() for k, v in net.state_dict().items()}
    atomic_write(os.path.join(out_dir, model + ".safetensors"), lambda tmp: save_file(state, tmp))
    atomic_write_json(os.path.join(out_dir, model + ".json"), meta)


def export_model_files(out_dir: str, model: str, name: str, rerun: str) -> str:
    """Copy a finished run's ``model.safetensors`` and ``model.json`` to the shipped weights
    (``diffsolve/models/weights/NAME.*``, weights first so that a JSON never points at missing
    weights); returns the JSON's path.  An unfinished run is refused, telling to rerun the same
    ``rerun`` (command / call)."""
    from ..models.checkpoint import WEIGHTS_DIR

    src = {ext: os.path.join(out_dir, model + ext) for ext in (".safetensors", ".json")}
    missing = [p for p in src.values() if not os.path.exists(p)]
    if missing:
        raise FileNotFoundError(f"{missing[0]} missing: the run in {out_dir} has not finished; "
                                f"rerun the same training {rerun} to finish it")
    for ext, path in src.items():
        atomic_write(os.path.join(WEIGHTS_DIR, name + ext), lambda tmp, path=path: shutil.copyfile(path, tmp))
    return os.path.join(WEIGHTS_DIR, name + ".json")
