"""Export a training run's EMA checkpoint to the shipped weights (``diffsolve train --export``).

    >>> from diffsolve.train.export import export_run
    >>> export_run("runs/digits", "digits", preset="digits")   # doctest: +SKIP
    '.../diffsolve/models/weights/digits.json'
"""

from __future__ import annotations

import os
import re

from ..models.checkpoint import WEIGHTS_DIR, save
from ..models.checkpoint_files import WEIGHT_DTYPES, read_json, read_weights
from ..models.gmm import BUILTINS

__all__ = ["export_run", "check_export_name", "EXPORT_DTYPES"]

EXPORT_DTYPES = tuple(WEIGHT_DTYPES)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_export_name(name: str) -> str:
    """A shipped model's name: letters, digits, ``_``, ``.``, ``-`` (no path), not an exact mixture's.

    >>> check_export_name("digits-long")
    'digits-long'
    >>> check_export_name("../escape")
    Traceback (most recent call last):
    ...
    ValueError: export name '../escape' must be a plain name (letters, digits, '_', '.', '-'; no path)
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name.endswith((".json", ".safetensors")):
        raise ValueError(f"export name {name!r} must be a plain name (letters, digits, '_', '.', '-'; no path)")
    if name in BUILTINS:
        raise ValueError(f"export name {name!r} is an exact mixture's; choose another")
    return name


def export_run(out_dir: str, name: str, dtype: str = "float16", preset: str | None = None) -> str:
    """Copy the EMA checkpoint of the run in ``out_dir`` to the shipped weights as ``name``
    (weights stored as ``dtype``); with ``preset`` (a run that followed the preset unchanged but
    for its steps), record the command that reproduces it. Returns the written JSON's path."""
    check_export_name(name)
    if dtype not in EXPORT_DTYPES:
        raise ValueError(f"export dtype {dtype!r} is not supported; accepted: {', '.join(EXPORT_DTYPES)}")
    meta_path = os.path.join(out_dir, "model.json")
    if not os.path.exists(meta_path):
        raise FileNotFoundError(f"no checkpoint to export: {meta_path} not found")
    meta = read_json(meta_path)  # save replaces its format, weights and weights_dtype
    sd = read_weights(os.path.join(out_dir, "model.safetensors"))
    meta["name"] = name
    tr = meta.setdefault("training", {})
    if preset is not None:
        # runs are deterministic and resume bit for bit, so this reproduces the exported EMA weights
        tr["reproduce"] = f"diffsolve train --preset {preset} --steps {tr.get('steps')} --export"
    return save(os.path.join(WEIGHTS_DIR, name), sd, meta, WEIGHT_DTYPES[dtype])
