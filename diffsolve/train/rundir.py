"""The run directory that every resumable trainer writes (:mod:`diffsolve.train.loop`,
:mod:`diffsolve.train.classifier`): preparing ``out_dir``, reading ``state.pt`` and refusing one
of another configuration, the ``log.jsonl`` lines, the loss window and the progress bar.

One place for them so that the trainers' files stay alike: ``log.jsonl`` holds one line
``{"step": ..., "loss": ..., "seconds": ...}`` per ``log_every`` steps (the mean loss of the
steps since the last line), and is rewritten from the checkpoint's ``losses`` when a run starts
or resumes, dropping lines of steps that will be redone.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     losses, window = [], [1.0, 3.0]
    ...     log_window(d, 2, 0.04, window, losses, None)
    ...     print(open(os.path.join(d, "log.jsonl")).read(), end=""); losses, window
    {"step": 2, "loss": 2.0, "seconds": 0.0}
    ([[2, 2.0, 0.0]], [])
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch

from ..io import atomic_write_text, remove_orphans
from .config import config_differences

__all__ = ["prepare_out_dir", "read_state", "check_resume_config", "rewrite_log", "log_window", "progress_bar"]


def _line(step: int, loss: float, seconds: float) -> str:
    return json.dumps({"step": step, "loss": loss, "seconds": seconds}) + "\n"


def prepare_out_dir(out_dir: Any, threads: int) -> list[str]:
    """Refuse an ``out_dir`` that is not a directory path (or is a file), set torch's thread
    count, create the directory and remove the temporary files a kill during a checkpoint write
    left there; returns their paths."""
    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"out_dir must be a directory path, got {type(out_dir).__name__}")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"out_dir {out_dir!r} is a file; pass a directory (new or one to resume)")
    torch.set_num_threads(threads)
    os.makedirs(out_dir, exist_ok=True)
    return remove_orphans(out_dir)


def read_state(path: str) -> Any:
    """``torch.load`` of a training state; a damaged file is refused naming it."""
    try:
        return torch.load(path, weights_only=False)
    except Exception as e:  # pickle / zip errors of a damaged file
        raise ValueError(f"{path}: not a readable training state ({type(e).__name__}: {e}); "
                         "use a new out_dir or resume=False") from None


def check_resume_config(state_path: str, saved: dict, now: dict, ignore: tuple[str, ...]) -> None:
    """Refuse to resume from ``state_path`` when its configuration ``saved`` differs from
    ``now`` outside ``ignore``, naming the differing fields."""
    diff = config_differences(saved, now, ignore=ignore)
    if diff:
        raise ValueError(f"{state_path} was written by another configuration ({'; '.join(diff)}, "
                         "checkpoint -> now); use a new out_dir, resume=False, or the checkpoint's settings")


def rewrite_log(out_dir: str, losses: list) -> None:
    """Rewrite ``log.jsonl`` from the checkpoint's ``losses`` ([step, mean loss, seconds] rows)."""
    atomic_write_text(os.path.join(out_dir, "log.jsonl"), "".join(_line(a, b, c) for a, b, c in losses))


def log_window(out_dir: str, step: int, elapsed: float, window: list, losses: list, bar: Any) -> None:
    """Close the loss window at ``step``: its mean goes to ``losses``, to a ``log.jsonl`` line
    and to the progress bar's postfix (when ``bar`` is not None); ``window`` is emptied."""
    mean = sum(window) / len(window)
    window.clear()
    losses.append([step, mean, round(elapsed, 1)])
    with open(os.path.join(out_dir, "log.jsonl"), "a") as f:
        f.write(_line(step, mean, round(elapsed, 1)))
    if bar is not None:
        bar.set_postfix(loss=f"{mean:.4f}")


def progress_bar(progress: bool, total: int, initial: int, desc: str) -> Any:
    """A tqdm bar over the steps when ``progress``, else None."""
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="step", desc=desc)
