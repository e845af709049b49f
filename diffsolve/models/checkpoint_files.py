"""Reading and checking a checkpoint's two files (``NAME.json`` and ``NAME.safetensors``).

Every refusal is a ``ValueError`` (or ``FileNotFoundError``) whose message starts with the
offending file's path and names the bad key, value or tensor and what would be accepted, so
that a truncated download, a hand-edited JSON or a diverged training run is caught at load
time instead of surfacing as a torch error deep inside sampling (or, worse, as a checkpoint
that loads and silently ignores its class labels).

    >>> meta = {"arch": "mlp", "arch_kwargs": {"dim": 2}, "path": "flow", "prediction": "velocity",
    ...         "shape": [2], "num_classes": 1}
    >>> check_meta(meta, "m.json")
    Traceback (most recent call last):
    ...
    ValueError: m.json: num_classes is 1 but arch_kwargs.num_classes is 0 (absent); the two must agree
"""

from __future__ import annotations

import inspect
import json
import math
import numbers
import os
from typing import Any

import torch
from torch import Tensor, nn

from ..denoisers import PREDICTIONS
from ..nets import ARCHITECTURES, build_net
from ..nets.embed import Conditioning
from ..paths import PATHS

__all__ = ["REQUIRED_KEYS", "REQUIRED_ARCH_KWARGS", "WEIGHT_DTYPES", "read_json", "check_meta", "read_weights",
           "check_weights", "build_checked_net", "complete_arch_kwargs", "check_weights_dtype"]

#: keys every checkpoint JSON must hold
REQUIRED_KEYS = ("arch", "arch_kwargs", "path", "prediction", "shape")
#: constructor arguments every checkpoint's ``arch_kwargs`` must name, per architecture.
#: ``save`` writes every constructor argument, but the shipped JSONs lack some (mnist.json has no
#: ``dropout``, ``groups``, ``heads``; moons.json no ``num_classes``), so only the argument that
#: changes the network's function *and* that no tensor shows is required: ``t_scale`` (the time
#: embedding's input scale; a default there is silently another model). The others are pinned by
#: the weights (dim, hidden, depth, channels, channel_mults, num_res_blocks, attn_levels: a wrong
#: default gives missing, unexpected or misshapen tensors, which check_weights refuses; num_classes:
#: checked against the JSON's num_classes and the class embedding), inert at sampling (dropout), or
#: absent from the shipped mnist.json, which was trained with their defaults (groups, heads; ``save``
#: refuses arch_kwargs whose network computes other values than the module it is given).
REQUIRED_ARCH_KWARGS = {"mlp": ("t_scale",), "unet": ("t_scale",)}
#: the dtypes a checkpoint's weights are stored in (the ``weights_dtype`` field)
WEIGHT_DTYPES = {"float16": torch.float16, "float32": torch.float32}
_SHOW = 5  # how many offending keys an error message names


def _names(keys: list[str]) -> str:
    more = f" and {len(keys) - _SHOW} more" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def read_json(path: str) -> Any:
    """The parsed content of a JSON file; a file that is not UTF-8 JSON is refused with its
    line and column."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a UTF-8 text file (byte {e.start}): not valid JSON") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a directory, not a JSON file") from None


def check_meta(meta: Any, path: str) -> None:
    """Refuse checkpoint metadata (the JSON's content, read from ``path``) with a missing or
    ill-typed key, an unknown architecture, path or prediction, a shape that is not a list of
    positive integers, a bad ``num_classes`` / ``sigma_data`` / ``value_range`` /
    ``class_names``, or a ``num_classes`` that disagrees with ``arch_kwargs.num_classes``."""
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: a checkpoint's JSON must be an object (a dict), got {type(meta).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise ValueError(f"{path}: missing required key{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                         f"(a checkpoint needs {', '.join(REQUIRED_KEYS)})")
    arch, kw = meta["arch"], meta["arch_kwargs"]
    if not isinstance(arch, str) or arch not in ARCHITECTURES:
        raise ValueError(f"{path}: unknown arch {arch!r}; accepted: {', '.join(ARCHITECTURES)}")
    if not isinstance(kw, dict):
        raise ValueError(f"{path}: arch_kwargs must be an object (keyword arguments of {arch}), got {kw!r}")
    if not isinstance(meta["path"], str) or meta["path"] not in PATHS:
        raise ValueError(f"{path}: unknown path {meta['path']!r}; accepted: {', '.join(PATHS)}")
    if not isinstance(meta["prediction"], str) or meta["prediction"] not in PREDICTIONS:
        raise ValueError(f"{path}: unknown prediction {meta['prediction']!r}; accepted: {', '.join(PREDICTIONS)}")
    shape = meta["shape"]
    if not isinstance(shape, list) or not shape or not all(_is_int(v) and v > 0 for v in shape):
        raise ValueError(f"{path}: shape must be a non-empty list of positive integers (the data shape "
                         f"without batch, e.g. [1, 28, 28]), got {shape!r}")
    n = meta.get("num_classes", 0)
    if not _is_int(n) or n < 0:
        raise ValueError(f"{path}: num_classes must be an integer >= 0 (0 = unconditional), got {n!r}")
    n_arch = kw.get("num_classes", 0)
    if n_arch != n:
        raise ValueError(f"{path}: num_classes is {n!r} but arch_kwargs.num_classes is {n_arch!r}"
                         f"{'' if 'num_classes' in kw else ' (absent)'}; the two must agree")
    absent = [k for k in REQUIRED_ARCH_KWARGS.get(arch, ()) if k not in kw]
    if absent:
        defaults = _constructor_defaults(arch)
        raise ValueError(f"{path}: arch_kwargs lacks {', '.join(absent)}; the {arch} network would take the "
                         f"constructor's default ({', '.join(f'{k}={defaults.get(k)!r}' for k in absent)}), which "
                         "may not be the trained model's; add the value it was trained with")
    sd = meta.get("sigma_data", 0.5)
    if not _is_real(sd) or not math.isfinite(sd) or sd <= 0:
        raise ValueError(f"{path}: sigma_data must be a finite number > 0, got {sd!r}")
    vr = meta.get("value_range")
    if vr is not None and not (isinstance(vr, list) and len(vr) == 2 and all(_is_real(v) and math.isfinite(v) for v in vr)
                               and vr[0] < vr[1]):
        raise ValueError(f"{path}: value_range must be null or [low, high] with finite low < high, got {vr!r}")
    names = meta.get("class_names")
    if names is not None and names != [] and not (isinstance(names, list) and len(names) == n
                                                  and all(isinstance(c, str) for c in names)):
        raise ValueError(f"{path}: class_names must be a list of {n} strings (one per class), got {names!r}")
    weights = meta.get("weights", "")
    if not isinstance(weights, str):
        raise ValueError(f"{path}: weights must be the weights file's name (a string), got {weights!r}")


def _constructor_defaults(arch: str) -> dict[str, Any]:
    params = inspect.signature(ARCHITECTURES[arch]).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def _json_value(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def complete_arch_kwargs(arch: Any, kw: Any) -> Any:
    """``kw`` with every constructor argument of ``arch`` that it omits set to its default (so a
    saved checkpoint states the whole network); unknown ``arch`` or non-dict ``kw`` unchanged
    (check_meta refuses them).

    >>> complete_arch_kwargs("mlp", {"dim": 2, "hidden": 16})
    {'dim': 2, 'hidden': 16, 'depth': 3, 'num_classes': 0, 't_scale': 1000.0}
    """
    if not isinstance(arch, str) or arch not in ARCHITECTURES or not isinstance(kw, dict):
        return kw
    return {**kw, **{k: _json_value(v) for k, v in _constructor_defaults(arch).items() if k not in kw}}


def check_weights_dtype(dtype: Any, name: str = "dtype") -> torch.dtype:
    """``dtype`` if weights can be stored in it (:data:`WEIGHT_DTYPES`), else ``ValueError``
    naming the argument ``name``."""
    if not isinstance(dtype, torch.dtype) or dtype not in WEIGHT_DTYPES.values():
        raise ValueError(f"{name} {dtype!r} cannot store checkpoint weights; accepted: "
                         + ", ".join(f"torch.{k}" for k in WEIGHT_DTYPES))
    return dtype


def build_checked_net(meta: dict, path: str) -> nn.Module:
    """The network described by checked ``meta``, probed once on a zero batch of ``meta["shape"]``
    (its output must have that shape): arch_kwargs that do not fit the architecture or the data
    shape are refused here, naming ``path``."""
    try:
        net = build_net(meta["arch"], **meta["arch_kwargs"])
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{path}: arch_kwargs {meta['arch_kwargs']!r} do not fit arch {meta['arch']!r}: {e}") from None
    shape = tuple(meta["shape"])
    x = torch.zeros(1, *shape)
    try:
        with torch.no_grad():
            out = net.eval()(x, torch.zeros(1))
    except (RuntimeError, ValueError, IndexError) as e:
        raise ValueError(f"{path}: the {meta['arch']} network built from arch_kwargs does not take data of "
                         f"shape {list(shape)}: {str(e).splitlines()[0]}") from None
    if tuple(out.shape) != x.shape:
        raise ValueError(f"{path}: the {meta['arch']} network maps data of shape {list(shape)} to "
                         f"{list(out.shape[1:])}; shape and arch_kwargs disagree")
    return net


def _class_embedding_key(net: nn.Module) -> str | None:
    """The state-dict key of the class-embedding table of a shipped architecture's network
    (present only when it is conditional), or None for a network without one."""
    for name, m in net.named_modules():
        if isinstance(m, Conditioning):
            return f"{name}.label.weight" if name else "label.weight"
    return None


def read_weights(path: str) -> dict[str, Tensor]:
    """The tensors of a ``.safetensors`` file; a missing, truncated or corrupted file is refused
    with its path."""
    from safetensors.torch import load_file

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: weights file not found")
    try:
        return load_file(path)
    except Exception as e:  # safetensors raises its own error types (header, buffer, dtype)
        size = os.path.getsize(path)
        raise ValueError(f"{path}: not a readable safetensors file ({size} bytes; truncated or corrupted?): "
                         f"{type(e).__name__}: {e}") from None


def check_weights(weights: dict[str, Tensor], net: nn.Module, path: str, num_classes: int | None = None) -> None:
    """Refuse ``weights`` (from the file ``path``) that do not fit ``net``: missing, unexpected
    or wrongly shaped tensors (a few named), non-floating tensors where the network has floats,
    non-finite values (the tensor named), and a class embedding whose rows disagree with
    ``num_classes`` (``num_classes + 1`` rows: the classes and the null label)."""
    want = net.state_dict()
    key = _class_embedding_key(net)
    if num_classes is not None and key is not None:
        w = weights.get(key)
        rows = w.shape[0] if w is not None and w.ndim else 1  # no table: unconditional
        if rows - 1 != num_classes:
            raise ValueError(f"{path}: num_classes is {num_classes} but the weights' class embedding {key} is for "
                             f"{rows - 1} classes ({rows} rows: the classes and the null label)")
    missing = [k for k in want if k not in weights]
    unexpected = [k for k in weights if k not in want]
    if missing or unexpected:
        parts = ([f"missing {len(missing)} tensor(s): {_names(missing)}"] if missing else []) + \
                ([f"unexpected {len(unexpected)} tensor(s): {_names(unexpected)}"] if unexpected else [])
        raise ValueError(f"{path}: the weights do not match the network of the checkpoint's JSON: " + "; ".join(parts))
    shapes = [f"{k} {list(weights[k].shape)} (expected {list(v.shape)})" for k, v in want.items()
              if weights[k].shape != v.shape]
    if shapes:
        raise ValueError(f"{path}: {len(shapes)} tensor(s) have the wrong shape: {_names(shapes)}")
    kinds = [k for k, v in want.items() if v.is_floating_point() and not weights[k].is_floating_point()]
    if kinds:
        raise ValueError(f"{path}: tensor(s) {_names(kinds)} are {weights[kinds[0]].dtype}, expected floating point")
    bad = [k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"{path}: non-finite weights (NaN or inf) in {_names(bad)}")
