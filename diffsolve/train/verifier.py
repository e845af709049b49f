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
version).

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

import dataclasses
import json
import math
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
from ..nets.verifier import ResidualVerifier
from .config import config_differences, require_int, require_real

__all__ = ["VerifierConfig", "train_verifier", "export_verifier", "random_shift", "evaluate", "FORMAT",
           "SHIPPED_NAME"]

FORMAT = "diffsolve-verifier/1"
#: the shipped weights' name in diffsolve/models/weights (NAME.safetensors, NAME.json)
SHIPPED_NAME = "mnist-verifier"
_MODEL = "verifier"  # the run directory's model files: verifier.safetensors, verifier.json


@dataclass
class VerifierConfig:
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

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["arch_kwargs"] = {k: list(v) if isinstance(v, tuple) else v for k, v in d["arch_kwargs"].items()}
        return d

    def check(self) -> None:
        """Refuse a field the trainer cannot use, naming it and what is accepted."""
        if not isinstance(self.arch_kwargs, dict):
            raise TypeError(f"arch_kwargs must be a dict, got {type(self.arch_kwargs).__name__}")
        for name, low in (("seed", 0), ("steps", 1), ("batch_size", 1), ("warmup", 0), ("max_shift", 0),
                          ("noise_every", 1), ("threads", 1)):
            require_int(name, getattr(self, name), low)
        require_real("lr", self.lr, "> 0", lambda v: v > 0)
        require_real("noise_max", self.noise_max, ">= 0", lambda v: v >= 0)


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


def _lr(cfg: VerifierConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))


def _load_state(path: str, fmt: str = FORMAT, what: str = "verifier") -> dict:
    """The training state at ``path``, refused unless it was written by a ``fmt`` trainer
    (shared with :mod:`diffsolve.train.noisy_classifier`)."""
    try:
        st = torch.load(path, weights_only=False)
    except Exception as e:  # pickle / zip errors of a damaged file
        raise ValueError(f"{path}: not a readable training state ({type(e).__name__}: {e}); "
                         "use a new out_dir or resume=False") from None
    if not isinstance(st, dict) or st.get("format") != fmt or not isinstance(st.get("config"), dict):
        raise ValueError(f"{path}: not a {what} training state; use a new out_dir or resume=False")
    return st


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

    torch.manual_seed(cfg.seed)
    try:
        net = ResidualVerifier(**cfg.arch_kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"arch_kwargs {cfg.arch_kwargs} do not fit ResidualVerifier: {e}") from None
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    step, elapsed, losses, window = 0, 0.0, [], []
    state_path = os.path.join(out_dir, "state.pt")
    if resume and os.path.exists(state_path):
        st = _load_state(state_path)
        diff = config_differences(st["config"], cfg.to_dict(), ignore=("threads",))
        if diff:
            raise ValueError(f"{state_path} was written by another configuration ({'; '.join(diff)}, "
                             "checkpoint -> now); use a new out_dir, resume=False, or the checkpoint's settings")
        net.load_state_dict(st["net"])
        opt.load_state_dict(st["opt"])
        gen.set_state(st["gen"])
        step, elapsed, losses, window = st["step"], st["elapsed"], st["losses"], st["window"]
    else:  # a fresh run: the model files of an earlier run in this directory are not its
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

        bar = tqdm(total=cfg.steps, initial=step, unit="step", desc="train verifier")
    t_start, base_elapsed = time.time(), elapsed
    n = x.shape[0]
    net.train()
    while step < cfg.steps:
        if max_seconds is not None and time.time() - t_start >= max_seconds:
            break
        idx = torch.randint(n, (cfg.batch_size,), generator=gen)
        xb = random_shift(x[idx], cfg.max_shift, gen)
        if cfg.noise_max > 0 and step % cfg.noise_every == cfg.noise_every - 1:
            std = torch.rand(cfg.batch_size, 1, 1, 1, generator=gen) * cfg.noise_max
            xb = xb + std * torch.randn(xb.shape, generator=gen)
        for g in opt.param_groups:
            g["lr"] = _lr(cfg, step)
        loss = F.cross_entropy(net(xb), y[idx])
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


def _write_model(cfg: VerifierConfig, net: nn.Module, out_dir: str, step: int, elapsed: float,
                 command: str | None, eval_n: int | None) -> dict[str, float]:
    """Measure the finished network and write ``verifier.safetensors`` then ``verifier.json``."""
    from safetensors.torch import save_file

    xt, yt = mnist("test")
    if eval_n is not None:
        xt, yt = xt[:eval_n], yt[:eval_n]
    acc = {"test": evaluate(net, xt, yt), "test_first_1000": evaluate(net, xt[:1000], yt[:1000])}
    state = {k: v.detach().to(torch.float32).contiguous() for k, v in net.state_dict().items()}
    atomic_write(os.path.join(out_dir, _MODEL + ".safetensors"), lambda tmp: save_file(state, tmp))
    atomic_write_json(os.path.join(out_dir, _MODEL + ".json"), {
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
    from ..models.checkpoint import WEIGHTS_DIR

    src = {ext: os.path.join(out_dir, _MODEL + ext) for ext in (".safetensors", ".json")}
    missing = [p for p in src.values() if not os.path.exists(p)]
    if missing:
        raise FileNotFoundError(f"{missing[0]} missing: the run in {out_dir} has not finished; "
                                "rerun the same training command to finish it")
    for ext, path in src.items():
        atomic_write(os.path.join(WEIGHTS_DIR, name + ext), lambda tmp, path=path: shutil.copyfile(path, tmp))
    return os.path.join(WEIGHTS_DIR, name + ".json")
