"""Atomic file writes: nothing half-written is left behind by a crash.

A write goes to a temporary file ``.tmp-XXXXXXXX<ext>`` beside its target and is renamed over
it; an exception removes the temporary file, but a process killed mid-write (``kill -9``,
power loss) leaves it behind.  :func:`remove_orphans` removes such leftovers; whoever resumes
work in a directory (training, the benchmark's store) calls it first.
"""

from __future__ import annotations

import json
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
    """Call ``write(tmp_path)`` then rename the temporary file over ``path``."""
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
    """Write ``text`` to ``path`` atomically."""
    def w(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)
    atomic_write(path, w)


def atomic_write_json(path: str, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


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
