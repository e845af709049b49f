"""The training loop: AdamW, EMA of the weights, label dropout for classifier-free guidance,
atomic checkpoints that resume exactly after a kill.

All randomness of a step (the batch indices, noise levels, noise, label dropout) comes from
one ``torch.Generator`` whose state is checkpointed with the model, the EMA, the optimizer
and the step counter, so a run killed and resumed reproduces the uninterrupted run's weights.

Files in ``out_dir``:

* ``state.pt``: everything to resume (written atomically every ``ckpt_every_s`` seconds or
  ``ckpt_every`` steps, and at the end);
* ``model.json`` / ``model.safetensors``: the EMA weights as a loadable checkpoint
  (:func:`diffsolve.load` accepts the directory);
* ``log.jsonl``: one line per ``log_every`` steps: step, mean loss, wall time.

    >>> import tempfile
    >>> from diffsolve.train import TrainConfig, train
    >>> cfg = TrainConfig(data="moons", arch="mlp", arch_kwargs={"dim": 2, "hidden": 16, "depth": 1},
    ...                   path="flow", prediction="velocity", steps=5, batch_size=16)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     res = train(cfg, d, progress=False)
    >>> res["step"]
    5
"""

from __future__ import annotations

import copy
import os
import time
from typing import Any

import torch
from torch import Tensor, nn

from ..data import load_dataset
from ..io import atomic_write
from ..models.checkpoint_files import check_weights_dtype
from ..nets import build_net, num_params
from ..paths import get_path
from .config import TrainConfig, require_int, require_real
from .losses import diffusion_loss
from .rundir import check_resume_config, log_window, prepare_out_dir, progress_bar, read_state, rewrite_log

__all__ = ["TrainConfig", "train", "ema_update"]


def ema_update(ema: nn.Module, net: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * net (parameters and floating buffers)."""
    with torch.no_grad():
        for e, p in zip(ema.state_dict().values(), net.state_dict().values()):
            if e.is_floating_point():
                e.mul_(decay).add_(p.detach(), alpha=1 - decay)
            else:
                e.copy_(p)


def _ema_decay(cfg: TrainConfig, step: int) -> float:
    # warm-up of the averaging horizon so early weights do not dominate
    return min(cfg.ema_decay, (1 + step) / (10 + step))


def _lr(cfg: TrainConfig, step: int) -> float:
    return cfg.lr * min(1.0, (step + 1) / max(cfg.warmup, 1))


def _build(cfg: TrainConfig, data: Tensor, labels: Tensor | None):
    kw = dict(cfg.arch_kwargs)
    if cfg.conditional:
        if labels is None:
            raise ValueError(f"data set {cfg.data!r} has no labels; cannot train a conditional model "
                             "(data sets with labels: mnist, digits; or conditional=False)")
        kw.setdefault("num_classes", int(labels.max()) + 1)
    if cfg.arch == "mlp":
        kw.setdefault("dim", int(data[0].numel()))
    elif cfg.arch == "unet":
        kw.setdefault("in_channels", int(data.shape[1]))
    if "t_scale" not in kw:
        kw["t_scale"] = default_t_scale(cfg.path, cfg.prediction)
    torch.manual_seed(cfg.seed)
    try:
        net = build_net(cfg.arch, **kw)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"arch_kwargs {kw} do not fit arch {cfg.arch!r}: {e}") from None
    return net, kw


def default_t_scale(path: str, prediction: str) -> float:
    """Scale of the network's time input so that the embedding sees a range of ~1000:
    EDM's c_noise = ln(s)/4 lies in about [-1.6, 1.1] -> 250; t in [0, 1] -> 1000; DDPM
    indices 0..999 -> 1."""
    if prediction == "edm":
        return 250.0
    p = get_path(path)
    return 1000.0 / p.t_max if p.t_max > 0 else 1.0


def _meta(cfg: TrainConfig, arch_kwargs: dict, data: Tensor, labels: Tensor | None, extra: dict) -> dict:
    num_classes = int(arch_kwargs.get("num_classes", 0))
    return {"arch": cfg.arch, "arch_kwargs": arch_kwargs, "path": cfg.path, "prediction": cfg.prediction,
            "sigma_data": cfg.sigma_data, "shape": list(data.shape[1:]), "num_classes": num_classes,
            "class_names": [str(i) for i in range(num_classes)],
            "value_range": [float(data.min()), float(data.max())], "data": cfg.data,
            "training": {"config": cfg.to_dict(), **extra}}


def _load_state(state_path: str) -> dict:
    """The resumable state written by :func:`_save_state`; an unreadable file is named."""
    st = read_state(state_path)
    if not isinstance(st, dict) or not isinstance(st.get("config"), dict):
        raise ValueError(f"{state_path}: not a diffsolve training state (no 'config'); use a new out_dir or resume=False")
    return st


def _save_state(out_dir: str, obj: dict) -> None:
    atomic_write(os.path.join(out_dir, "state.pt"), lambda tmp: torch.save(obj, tmp))


def _init_from(model: str, net: nn.Module, ema: nn.Module) -> None:
    """Fine-tuning: load the weights of the checkpoint ``model`` (a shipped name or a path) into
    the network and its EMA; a checkpoint of another architecture is refused with its path."""
    from ..models.checkpoint import locate, weights_path
    from ..models.checkpoint_files import check_weights, read_json, read_weights

    meta_path = locate(model)
    path = weights_path(read_json(meta_path), meta_path)
    weights = read_weights(path)
    check_weights(weights, net, path)
    sd = {k: v.to(net.state_dict()[k].dtype) for k, v in weights.items()}
    net.load_state_dict(sd)
    ema.load_state_dict(sd)


def train(cfg: TrainConfig, out_dir: str, *, resume: bool = True, progress: bool = True,
          ckpt_every: int | None = None, ckpt_every_s: float = 300.0, log_every: int = 50,
          max_seconds: float | None = None, command: str | None = None,
          export_dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """Train (or resume) a model described by ``cfg`` into ``out_dir``; returns a summary dict
    (step, last losses, seconds, parameters, the orphaned temporary files of a killed write
    that were removed). Stops at ``cfg.steps`` or after ``max_seconds``.

    Refuses before any work (``ValueError`` / ``TypeError``, naming the argument and what is
    accepted) every bad argument: a config that :meth:`TrainConfig.check` refuses, an ``out_dir``
    that is a file, an ``export_dtype`` weights cannot be stored in, ...; and resuming from a
    ``state.pt`` written by another configuration (the differing fields named)."""
    from ..models.checkpoint import save as save_checkpoint

    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    cfg.check()
    for name, flag in (("resume", resume), ("progress", progress)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    if command is not None and not isinstance(command, str):
        raise TypeError(f"command must be a str (the command line to record) or None, got {type(command).__name__}")
    check_weights_dtype(export_dtype, "export_dtype")
    require_int("log_every", log_every, 1)
    if ckpt_every is not None:
        require_int("ckpt_every", ckpt_every, 1)
    require_real("ckpt_every_s", ckpt_every_s, ">= 0", lambda v: v >= 0)
    if max_seconds is not None:
        require_real("max_seconds", max_seconds, ">= 0", lambda v: v >= 0)
    orphans = prepare_out_dir(out_dir, cfg.threads)  # removes what a kill during a checkpoint write left
    data, labels = load_dataset(cfg.data, cfg.data_split)
    data = data.float()
    if not cfg.conditional:
        labels = None
    net, arch_kwargs = _build(cfg, data, labels)
    ema = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    step, elapsed, losses, window = 0, 0.0, [], []
    state_path = os.path.join(out_dir, "state.pt")
    if resume and os.path.exists(state_path):
        st = _load_state(state_path)
        check_resume_config(state_path, st["config"], cfg.to_dict(), ("steps", "threads"))  # these may change
        net.load_state_dict(st["net"])
        ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["opt"])
        gen.set_state(st["gen"])
        torch.set_rng_state(st["torch_rng"])
        step, elapsed, losses, window = st["step"], st["elapsed"], st["losses"], st.get("window", [])
    elif cfg.init_from is not None:
        _init_from(cfg.init_from, net, ema)
    n = data.shape[0]
    num_classes = int(arch_kwargs.get("num_classes", 0))
    # the log restarts from what the checkpoint knows (drops lines of steps that were redone)
    rewrite_log(out_dir, losses)

    def checkpoint() -> None:
        _save_state(out_dir, {"config": cfg.to_dict(), "net": net.state_dict(), "ema": ema.state_dict(),
                              "opt": opt.state_dict(), "gen": gen.get_state(), "torch_rng": torch.get_rng_state(),
                              "step": step, "elapsed": elapsed, "losses": losses, "window": window})
        extra = {"steps": step, "seconds": round(elapsed, 1), "params": num_params(net),
                 "final_loss": losses[-1][1] if losses else None, "command": command}
        save_checkpoint(os.path.join(out_dir, "model"), ema, _meta(cfg, arch_kwargs, data, labels, extra), export_dtype)

    bar = progress_bar(progress, cfg.steps, step, f"train {cfg.data}")
    t_start, last_ckpt = time.time(), time.time()
    base_elapsed = elapsed
    net.train()
    while step < cfg.steps:
        if max_seconds is not None and time.time() - t_start >= max_seconds:
            break
        idx = torch.randint(n, (cfg.batch_size,), generator=gen)
        x0 = data[idx]
        lab = None
        if labels is not None:
            lab = labels[idx].clone()
            drop = torch.rand(cfg.batch_size, generator=gen) < cfg.label_dropout
            lab[drop] = num_classes  # the null label
        for g in opt.param_groups:
            g["lr"] = _lr(cfg, step)
        loss = diffusion_loss(net, x0, cfg.path, cfg.prediction, labels=lab, generator=gen,
                              noise_dist=cfg.noise_dist, weighting=cfg.weighting, sigma_data=cfg.sigma_data,
                              p_mean=cfg.p_mean, p_std=cfg.p_std)
        if not bool(torch.isfinite(loss)):
            raise FloatingPointError(f"non-finite loss at step {step}; lower lr (now {cfg.lr})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip and cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        ema_update(ema, net, _ema_decay(cfg, step))
        step += 1
        elapsed = base_elapsed + time.time() - t_start
        window.append(loss.item())
        if step % log_every == 0:
            log_window(out_dir, step, elapsed, window, losses, bar)
        if bar is not None:
            bar.update(1)
        due = (ckpt_every is not None and step % ckpt_every == 0) or (time.time() - last_ckpt >= ckpt_every_s)
        if due:
            checkpoint()
            last_ckpt = time.time()
    if bar is not None:
        bar.close()
    checkpoint()
    return {"step": step, "seconds": elapsed, "params": num_params(net), "losses": losses, "out_dir": out_dir,
            "removed_orphans": orphans}
