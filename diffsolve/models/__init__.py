"""Models by name: the exact Gaussian mixtures (:mod:`~diffsolve.models.gmm`) and trained
checkpoints, shipped or saved (:mod:`~diffsolve.models.checkpoint`).

    >>> from diffsolve.models import load_model
    >>> load_model("gmm-2d").shape
    (2,)
    >>> load_model("digits").num_classes
    10
    >>> load_model("gmm-5d")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown model 'gmm-5d'; accepted: exact mixtures gmm-2d, gmm-64, gmm-3072; shipped models ...
"""

from __future__ import annotations

import os

from ..denoisers import Denoiser
from .checkpoint import SHIPPED, WEIGHTS_DIR, load, shipped_models, shipped_text_models
from .gmm import BUILTINS, builtin

__all__ = ["load_model", "is_model_name", "accepted_models"]


def accepted_models() -> str:
    """What :func:`load_model` accepts, in words (for error messages).

    >>> accepted_models()  # doctest: +ELLIPSIS
    'exact mixtures gmm-2d, gmm-64, gmm-3072; shipped models digits, ...; or a checkpoint path (.json, .safetensors or a run directory)'
    """
    text = shipped_text_models()
    text_part = f"; shipped text models {', '.join(text)}" if text else ""
    return (f"exact mixtures {', '.join(BUILTINS)}; shipped models {', '.join(shipped_models()) or '(none present)'}"
            f"{text_part}; or a checkpoint path (.json, .safetensors or a run directory)")


def is_model_name(name: str) -> bool:
    """Whether :func:`load_model` would find ``name`` (without loading it): an exact mixture, a
    shipped model, a checkpoint exported to the shipped weights, or an existing checkpoint path.

    >>> is_model_name("gmm-64"), is_model_name("mnist"), is_model_name("gmm-5d")
    (True, True, False)
    """
    if not isinstance(name, str) or not name:
        return False
    if name in BUILTINS or name in SHIPPED:
        return True
    from ..discrete.models import TEXT_SHIPPED

    if name in TEXT_SHIPPED:  # a text model (diffsolve train-text); load says how to train it when absent
        return True
    if os.sep in name or os.path.exists(name):  # a checkpoint path: the prefix, .json, .safetensors or a directory
        return any(os.path.exists(p) for p in (name, name + ".json"))
    return os.path.exists(os.path.join(WEIGHTS_DIR, name + ".json"))  # exported with ``diffsolve train --export-name``


def load_model(name: str) -> Denoiser:
    """A sampleable model by name: an exact mixture from :data:`~diffsolve.models.gmm.BUILTINS`
    (``gmm-2d``, ``gmm-64``, ``gmm-3072``), or a trained model loaded with
    :func:`~diffsolve.models.checkpoint.load` (a shipped name such as ``mnist`` or ``digits``, or a
    checkpoint path). Unknown names are refused with both kinds listed (see the module example).
    A text model (``shakespeare``, ``shakespeare-ar`` or a text run directory) comes back as a
    :class:`~diffsolve.discrete.models.MaskedTextModel` or
    :class:`~diffsolve.discrete.models.ARTextModel`, not a Denoiser.
    """
    if not isinstance(name, str):
        raise TypeError(f"model must be a name or a checkpoint path (str), got {type(name).__name__}")
    if name in BUILTINS:
        return builtin(name)
    if not is_model_name(name):
        raise ValueError(f"unknown model {name!r}; accepted: {accepted_models()}")
    return load(name)
