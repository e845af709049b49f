"""Atomic file writes: nothing half-written is left behind by a crash.

A write goes to a temporary file ``.tmp-XXXXXXXX<ext>`` beside its target and is renamed over
it; an exception removes the temporary file, but a process killed mid-write (``kill -9``,
power loss) leaves it behind.  :func:`remove_orphans` removes such leftovers; whoever resumes
work in a directory (training, the benchmark's store) calls it first.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
from typing import Any, Callable

import torch

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_json", "atomic_save_tensor", "remove_orphans",
           "TMP_PREFIX"]

#: prefix of atomic_write's temporary files
TMP_PREFIX = ".tmp-"
# mkstemp's names: the prefix, 8 characters of [a-z0-9_], then the target's extension (if any)
_ORPHAN = re.compile(re.escape(TMP_PREFIX) + r"[a-z0-9_]{8}(\.[^.]*)?")


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file over ``path`` (a file path: a
    directory there is refused)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path (str or os.PathLike), got {type(path).__name__}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a directory; pass the path of a file to write")
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=TMP_PREFIX, suffix=os.path.splitext(path)[1])
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` (a str) to ``path`` atomically."""
    if not isinstance(text, str):
        raise TypeError(f"{path}: text must be a str, got {type(text).__name__}")

    def w(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)
    atomic_write(path, w)


def _not_json(obj: Any, where: str = "") -> str | None:
    """Where in ``obj`` (``["a"][0]``) the first value strict JSON cannot hold is, and what it
    is; None when every value is a str, a finite number, a bool, None, a list, a tuple or a
    dict with string keys."""
    if obj is None or isinstance(obj, (str, bool, int)):
        return None
    if isinstance(obj, float):
        return None if math.isfinite(obj) else f"{where or 'the value'} is {obj!r} (JSON has no NaN or inf)"
    if isinstance(obj, (list, tuple)):
        return next((r for i, v in enumerate(obj) if (r := _not_json(v, f"{where}[{i}]"))), None)
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                return f"{where or 'the object'} has a key {k!r} of type {type(k).__name__} (JSON keys are strings)"
            if r := _not_json(v, f"{where}[{k!r}]"):
                return r
        return None
    return f"{where or 'the value'} is of type {type(obj).__name__}, which JSON cannot hold"


def atomic_write_json(path: str, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted, strict JSON to ``path`` atomically; a value JSON
    cannot hold (NaN, inf, an object, a non-string key) is refused naming the path and where it is."""
    bad = _not_json(obj)
    if bad:
        raise ValueError(f"{path}: not written: {bad}; accepted: str, finite numbers, bool, None, "
                         "lists and dicts with string keys")
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def atomic_save_tensor(x: torch.Tensor, path: str) -> None:
    """``torch.save(x)`` to ``path`` atomically."""
    atomic_write(path, lambda tmp: torch.save(x, tmp))


def remove_orphans(directory: str, older_than: float = 0.0) -> list[str]:
    """Remove the temporary files that :func:`atomic_write` left in ``directory`` when its
    process was killed mid-write, and return their paths (sorted).

    Only files named as ``atomic_write`` names them (``.tmp-`` + 8 characters + the target's
    extension) are touched; subdirectories are not searched.  ``older_than`` (seconds) keeps
    files modified more recently, for a directory that another live process may be writing
    to.  A directory that does not exist has nothing to remove.
    """
    if not isinstance(older_than, (int, float)) or isinstance(older_than, bool) or not older_than >= 0:
        raise ValueError(f"older_than must be a number of seconds >= 0, got {older_than!r}")
    if not os.path.exists(directory):
        return []
    if not os.path.isdir(directory):
        raise ValueError(f"{directory}: not a directory (remove_orphans cleans a directory)")
    cutoff = time.time() - older_than
    removed = []
    with os.scandir(directory) as entries:
        for e in entries:
            if not _ORPHAN.fullmatch(e.name) or not e.is_file(follow_symlinks=False):
                continue
            try:
                if older_than and e.stat(follow_symlinks=False).st_mtime > cutoff:
                    continue
                os.unlink(e.path)
            except FileNotFoundError:  # another process renamed or removed it meanwhile
                continue
            removed.append(e.path)
    return sorted(removed)
