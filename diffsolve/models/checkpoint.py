"""Trained-model checkpoints: save, load, and the registry of shipped models.

A checkpoint is two files side by side:

* ``NAME.safetensors``: the network weights (float16 or float32);
* ``NAME.json``: everything needed to sample: ``arch`` and ``arch_kwargs`` (see
  :func:`diffsolve.nets.build_net`), ``path`` (a name from ``diffsolve.PATHS``),
  ``prediction``, ``sigma_data``, the data ``shape`` (without batch), ``value_range``,
  ``num_classes`` and ``class_names``, and a ``training`` record (command, steps, losses).

``save`` computes ``format``, ``weights`` (the file name ``NAME.safetensors``) and
``weights_dtype`` itself (a passed meta's values of these are replaced: re-saving a loaded
checkpoint's meta under another name points at the new weights) and writes every constructor
argument of the network into ``arch_kwargs``.  ``load`` reads the weights file that the JSON's
``weights`` field names; when that file is missing but ``NAME.safetensors`` lies beside
``NAME.json`` (a pair renamed or copied by hand), it reads that one.

``load`` returns a :class:`TrainedDenoiser`, a ready :class:`~diffsolve.denoisers.NetworkDenoiser`
with ``.shape``, ``.num_classes`` and ``.path``; class conditioning is passed as
``cond={"labels": LongTensor}`` and the null (unconditional) label is ``num_classes``.

    >>> import torch, diffsolve
    >>> model = diffsolve.load("digits")
    >>> model.shape, model.num_classes
    ((1, 8, 8), 10)
    >>> noise = torch.randn(4, *model.shape, generator=torch.Generator().manual_seed(0))
    >>> res = diffsolve.sample(model, noise, solver="dpm++2m", nfe=10, cond={"labels": torch.arange(4)})
    >>> res.samples.shape
    torch.Size([4, 1, 8, 8])

``load`` also takes a diffusers ``UNet2DModel`` (an object or a saved directory) together with
its scheduler (object, config dict, or a directory holding ``scheduler_config.json``); the
network is adapted with :func:`~diffsolve.denoisers.from_network` on the
:class:`~diffsolve.paths.DiscreteVPPath` built from the scheduler's betas and its
``prediction_type``.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import torch
from torch import Tensor, nn

from ..denoisers import NetworkDenoiser
from ..io import atomic_write, atomic_write_json
from ..nets.embed import check_labels
from ..paths import DiscreteVPPath, Path, get_path
from .checkpoint_files import (build_checked_net, check_meta, check_weights, check_weights_dtype, complete_arch_kwargs,
                               read_json, read_weights)

__all__ = ["save", "load", "locate", "TrainedDenoiser", "SHIPPED", "WEIGHTS_DIR", "shipped_models", "FORMAT",
           "shipped_text_models"]

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
FORMAT = "diffsolve-checkpoint/1"
#: shipped model names (files NAME.json / NAME.safetensors in WEIGHTS_DIR)
SHIPPED = ("digits", "mnist", "moons", "rings", "checker")


def shipped_models() -> list[str]:
    """Names of the shipped models whose weights are present."""
    return [n for n in SHIPPED if os.path.exists(os.path.join(WEIGHTS_DIR, n + ".json"))]


def shipped_text_models() -> list[str]:
    """Names of the shipped text models (:mod:`diffsolve.discrete.models`, loaded by :func:`load`
    as well) whose weights are present."""
    from ..discrete.models import shipped_text_models as present

    return present()


class TrainedDenoiser(NetworkDenoiser):
    """A NetworkDenoiser for a trained network, with what a sampler needs to know.

    Attributes: ``net`` (the torch module, eval mode), ``shape`` (data shape without batch),
    ``num_classes`` (0 if unconditional), ``null_label`` (= num_classes), ``class_names``,
    ``value_range`` and ``meta`` (the checkpoint's JSON).
    """

    def __init__(self, net: Any, path: Path | str, prediction: str, *, shape: tuple[int, ...],
                 num_classes: int = 0, class_names: list[str] | None = None,
                 value_range: tuple[float, float] | None = (-1.0, 1.0), meta: dict | None = None, **kw: Any):
        super().__init__(net, path, prediction, **kw)
        self.shape = tuple(int(v) for v in shape)
        self.num_classes = int(num_classes)
        self.null_label = self.num_classes
        self.class_names = list(class_names) if class_names else [str(i) for i in range(self.num_classes)]
        self.value_range = tuple(value_range) if value_range is not None else None
        self.meta = dict(meta or {})

    def check(self, y: Tensor, cond: dict[str, Any]) -> dict[str, Any]:
        """The state must have this model's ``shape``; ``labels`` (the only conditioning) must be
        class indices 0..num_classes (num_classes = the null label), one per row or one for all,
        and are refused for an unconditional model."""
        cond = super().check(y, cond)  # the shape, and keys the network takes (labels)
        if cond.get("labels") is None:
            return cond
        try:
            labels = check_labels(cond["labels"], y.shape[0], self.num_classes)
        except ValueError as e:
            raise ValueError(f"{self.describe_self()}: {e}") from None
        return {**cond, "labels": labels}

    def describe_self(self) -> str:
        return f"model {self.meta.get('name', '?')!r}"

    def _call_net(self, x: Tensor, t: Tensor, cond: dict) -> Tensor:
        if "labels" in cond and cond["labels"] is not None:
            lab = torch.as_tensor(cond["labels"], device=x.device).long()
            if lab.ndim == 0:
                lab = lab.expand(x.shape[0])
            cond = {**cond, "labels": lab}
        # no torch.no_grad here: guidance that differentiates through D (e.g. DPS) needs the graph;
        # the weights are frozen, so plain sampling builds none.
        return super()._call_net(x, t, cond)

    def __repr__(self) -> str:
        name = self.meta.get("name", "?")
        return (f"TrainedDenoiser({name!r}, shape={self.shape}, num_classes={self.num_classes}, "
                f"prediction={self.prediction!r}, path={self.path.name!r})")


def _state_dict_to_save(net: Any, dtype: torch.dtype) -> dict[str, Tensor]:
    """The tensors to write (cpu, floats in ``dtype``); ``net`` must be a torch module or a dict
    of tensors."""
    sd = net.state_dict() if isinstance(net, nn.Module) else net
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in sd.items()):
        raise TypeError(f"net must be a torch.nn.Module or a dict of tensors (a state dict), got {type(net).__name__}")
    return {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous() for k, v in sd.items()}


def save(prefix: str, net: nn.Module | dict[str, Tensor], meta: dict[str, Any], dtype: torch.dtype = torch.float32) -> str:
    """Write ``prefix.safetensors`` and ``prefix.json`` atomically; returns the JSON path.

    ``meta`` (a dict) must hold ``arch``, ``arch_kwargs``, ``path``, ``prediction`` and ``shape``;
    its ``format``, ``weights`` and ``weights_dtype`` are replaced by this file's, and
    ``arch_kwargs`` is completed with the constructor's defaults. It is checked as :func:`load`
    checks it, and so are the weights (in ``dtype``, float16 or float32: a value that overflows
    float16 is refused), so that nothing is written that ``load`` would refuse. A module ``net``
    must compute what the JSON's network computes with the same weights (the round trip gives
    ``net`` back); a state dict, which cannot show that, needs ``arch_kwargs.t_scale`` given."""
    from safetensors.torch import save_file

    if not isinstance(prefix, (str, os.PathLike)):
        raise TypeError(f"prefix must be a path (str), got {type(prefix).__name__}")
    if not isinstance(meta, dict):
        raise TypeError(f"meta must be a dict (the checkpoint's JSON: arch, arch_kwargs, path, prediction, shape, ...), "
                        f"got {type(meta).__name__}")
    check_weights_dtype(dtype)
    prefix = os.fspath(prefix)
    if prefix.endswith(".json") or prefix.endswith(".safetensors"):
        prefix = os.path.splitext(prefix)[0]
    computed = {"format": FORMAT, "weights": os.path.basename(prefix) + ".safetensors",
                "weights_dtype": str(dtype).replace("torch.", "")}
    full = {"sigma_data": 0.5, "num_classes": 0, "value_range": [-1.0, 1.0], **meta, **computed}
    if isinstance(net, nn.Module) and "arch_kwargs" in full:  # the defaults are checked against net below
        full["arch_kwargs"] = complete_arch_kwargs(full.get("arch"), full["arch_kwargs"])
    check_meta(full, prefix + ".json")
    full["arch_kwargs"] = complete_arch_kwargs(full["arch"], full["arch_kwargs"])
    sd = _state_dict_to_save(net, dtype)
    built = build_checked_net(full, prefix + ".json")
    check_weights(sd, built, prefix + ".safetensors", full["num_classes"])
    if isinstance(net, nn.Module):
        _check_same_function(net, built, sd, full, prefix + ".json")
    atomic_write(prefix + ".safetensors", lambda tmp: save_file(sd, tmp, metadata={"format": FORMAT}))
    atomic_write_json(prefix + ".json", full)
    return prefix + ".json"


def _check_same_function(net: nn.Module, built: nn.Module, sd: dict[str, Tensor], meta: dict, path: str) -> None:
    """Refuse ``meta`` whose network, given the weights ``sd``, computes other values than ``net``
    with them: an argument no tensor shows (``t_scale``, a UNet's ``groups`` or ``heads``) that
    disagrees with the module would make :func:`load` return another model."""
    twin = copy.deepcopy(net).cpu().float().eval()
    twin.load_state_dict(sd)
    built.load_state_dict(sd)
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, *meta["shape"], generator=g), 0.25 + 0.5 * torch.rand(2, generator=g)
    try:
        with torch.no_grad():
            want, got = twin(x, t), built.eval()(x, t)
    except (RuntimeError, TypeError, ValueError) as e:
        raise TypeError(f"{path}: net cannot be called as net(x, t) on data of shape {meta['shape']}: "
                        f"{str(e).splitlines()[0]}") from None
    if want.shape != got.shape or not torch.allclose(want, got, rtol=1e-4, atol=1e-5):
        raise ValueError(f"{path}: arch_kwargs {meta['arch_kwargs']} do not describe net (the network they build "
                         "computes other values with the same weights); give the arguments net was built with "
                         "(those no tensor shows: t_scale; a UNet's groups and heads)")


def _resolve(name_or_path: str) -> str:
    """The JSON file of a shipped name, a prefix without extension, a .json/.safetensors file or
    a directory holding model.json / ema.json; a path with another extension is refused."""
    if name_or_path in SHIPPED or (os.sep not in name_or_path and not os.path.exists(name_or_path)):
        p = os.path.join(WEIGHTS_DIR, name_or_path + ".json")
        if os.path.exists(p):
            return p
        if name_or_path in SHIPPED:
            raise FileNotFoundError(f"shipped model {name_or_path!r} has no weights in {WEIGHTS_DIR}; "
                                    f"train it with: diffsolve train --preset {name_or_path} --export")
        from ..discrete.models import TEXT_SHIPPED

        if name_or_path in TEXT_SHIPPED:
            raise FileNotFoundError(f"shipped text model {name_or_path!r} has no weights in {WEIGHTS_DIR}; "
                                    f"train it with: diffsolve train-text --preset {name_or_path} --export")
        raise ValueError(f"unknown model {name_or_path!r}; accepted: {', '.join(shipped_models())}, "
                         "a checkpoint path (.json/.safetensors or a directory), or a diffusers UNet2DModel")
    p = name_or_path
    if os.path.isdir(p):
        for cand in ("model.json", "ema.json"):
            if os.path.exists(os.path.join(p, cand)):
                return os.path.join(p, cand)
        raise FileNotFoundError(f"{p}: no model.json (diffsolve checkpoint) or config.json (diffusers) in this directory")
    ext = os.path.splitext(os.path.basename(p))[1]
    if ext == ".safetensors":
        p = p[: -len(ext)] + ".json"
    elif ext != ".json":
        if ext and not os.path.exists(p + ".json"):  # a prefix may hold dots when PREFIX.json exists
            raise ValueError(f"{p}: not a checkpoint (extension {ext!r}); a checkpoint is a shipped name, a "
                             "NAME.json or NAME.safetensors file, a prefix NAME without extension, or a directory "
                             "holding model.json")
        p = p + ".json"
    if not os.path.exists(p):
        raise FileNotFoundError(f"{p}: checkpoint metadata not found")
    return p


def locate(model: str) -> str:
    """Where :func:`load` reads ``model`` (a name or path) from, without loading it: a diffusers
    directory as given, else the checkpoint's JSON file; refused as :func:`load` refuses it."""
    if not isinstance(model, str):
        raise TypeError(f"model must be a name or a path (str), got {type(model).__name__}")
    return model if _is_diffusers_dir(model) else _resolve(model)


def weights_path(meta: dict, meta_path: str) -> str:
    """The weights file of the checkpoint ``meta_path``: the one its ``weights`` field names, else
    (that one missing) the ``NAME.safetensors`` beside ``NAME.json`` (a pair renamed by hand)."""
    d = os.path.dirname(meta_path)
    sibling = os.path.basename(meta_path)[: -len(".json")] + ".safetensors"
    named = os.path.join(d, meta.get("weights") or sibling)
    for p in (named, os.path.join(d, sibling)):
        if os.path.isfile(p):
            return p
    raise FileNotFoundError(f"{named}: weights file not found (named by the 'weights' field of {meta_path}; "
                            "a checkpoint renamed by hand needs its NAME.safetensors renamed alike)")


def _is_diffusers_dir(p: Any) -> bool:
    if not isinstance(p, str) or not os.path.isdir(p):
        return False
    cfg = os.path.join(p, "config.json")
    if not os.path.exists(cfg):
        return False
    content = read_json(cfg)
    return isinstance(content, dict) and content.get("_class_name") == "UNet2DModel"


def load(model: Any, scheduler: Any = None, *, device: str | torch.device = "cpu",
         net_dtype: torch.dtype | None = torch.float32, allow_extrapolation: bool = False) -> TrainedDenoiser:
    """A ready Denoiser from a shipped name (``"mnist"``, ``"digits"``, ``"moons"``, ``"rings"``,
    ``"checker"``), a checkpoint path, or a diffusers ``UNet2DModel`` (object or directory) with
    its ``scheduler`` (object, config dict or directory; default: the ``scheduler`` sub-folder or
    the model directory itself, else DDPM linear betas with epsilon prediction).

    A text checkpoint (``format`` ``"diffsolve-text/1"``: the shipped ``"shakespeare"`` and
    ``"shakespeare-ar"``, or a ``diffsolve train-text`` run directory) is loaded with
    :func:`diffsolve.discrete.models.load_text_model` on ``device`` (the other arguments do not
    apply to it)."""
    if isinstance(model, nn.Module) or _is_diffusers_dir(model):
        return _load_diffusers(model, scheduler, device=device, net_dtype=net_dtype,
                               allow_extrapolation=allow_extrapolation)
    if not isinstance(model, str):
        raise TypeError(f"load expects a model name, a path or a diffusers UNet2DModel, got {type(model).__name__}")
    meta_path = _resolve(model)
    meta = read_json(meta_path)
    if isinstance(meta, dict) and isinstance(meta.get("format"), str) and meta["format"].startswith("diffsolve-text/"):
        from ..discrete.models import load_text_model  # a text model (diffsolve train-text): its own loader

        return load_text_model(meta_path, device=device)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{meta_path} is not a diffsolve checkpoint (format {found!r}, expected {FORMAT!r})")
    check_meta(meta, meta_path)
    net = build_checked_net(meta, meta_path)
    wpath = weights_path(meta, meta_path)
    sd = read_weights(wpath)
    check_weights(sd, net, wpath, meta.get("num_classes", 0))
    net.load_state_dict({k: v.float() for k, v in sd.items()})
    net.eval().requires_grad_(False).to(device)
    meta.setdefault("name", os.path.basename(meta_path)[:-5])
    return TrainedDenoiser(net, meta["path"], meta["prediction"], shape=tuple(meta["shape"]),
                           num_classes=meta.get("num_classes", 0), class_names=meta.get("class_names"),
                           value_range=meta.get("value_range"), meta=meta, sigma_data=meta.get("sigma_data", 0.5),
                           net_dtype=net_dtype, allow_extrapolation=allow_extrapolation)


# ---------------------------------------------------------------------------------------
# diffusers UNet2DModel
# ---------------------------------------------------------------------------------------

_DIFFUSERS_PREDICTIONS = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}


class _DiffusersNet(nn.Module):
    """``f(x, t, labels=None)`` around a UNet2DModel (its output's ``.sample``)."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        kw = {} if labels is None else {"class_labels": labels}
        return self.unet(x, t, **kw).sample


def _scheduler_config(scheduler: Any, model_dir: str | None) -> dict:
    if scheduler is None and model_dir is not None:
        for d in (os.path.join(model_dir, "scheduler"), os.path.join(os.path.dirname(model_dir.rstrip("/")), "scheduler"), model_dir):
            if os.path.exists(os.path.join(d, "scheduler_config.json")):
                scheduler = d
                break
    if scheduler is None:
        return {}
    if isinstance(scheduler, dict):
        return dict(scheduler)
    if isinstance(scheduler, str):
        return read_json(os.path.join(scheduler, "scheduler_config.json") if os.path.isdir(scheduler) else scheduler)
    cfg = getattr(scheduler, "config", None)
    if cfg is None:
        raise TypeError(f"scheduler must be a diffusers scheduler, a config dict or a path, got {type(scheduler).__name__}")
    return dict(cfg)


def _load_diffusers(model: Any, scheduler: Any, *, device, net_dtype, allow_extrapolation) -> TrainedDenoiser:
    model_dir = model if isinstance(model, str) else None
    if model_dir is not None:
        from diffusers import UNet2DModel

        model = UNet2DModel.from_pretrained(model_dir)
    cfg = _scheduler_config(scheduler, model_dir)
    n = int(cfg.get("num_train_timesteps", 1000))
    if cfg.get("trained_betas") is not None:
        betas: Tensor | str = torch.tensor(cfg["trained_betas"], dtype=torch.float64)
    else:
        kind = cfg.get("beta_schedule", "linear")
        b0, b1 = float(cfg.get("beta_start", 1e-4)), float(cfg.get("beta_end", 0.02))
        if kind == "linear":
            betas = torch.linspace(b0, b1, n, dtype=torch.float64)
        elif kind == "scaled_linear":
            betas = torch.linspace(b0**0.5, b1**0.5, n, dtype=torch.float64) ** 2
        elif kind == "squaredcos_cap_v2":
            betas = "cosine"
        else:
            raise ValueError(f"unsupported diffusers beta_schedule {kind!r}; accepted: linear, scaled_linear, squaredcos_cap_v2")
    path = DiscreteVPPath(betas, num_steps=n, zero_terminal_snr=bool(cfg.get("rescale_betas_zero_snr", False)),
                          name=f"diffusers-{cfg.get('beta_schedule', 'linear')}")
    ptype = cfg.get("prediction_type", "epsilon")
    if ptype not in _DIFFUSERS_PREDICTIONS:
        raise ValueError(f"unsupported diffusers prediction_type {ptype!r}; accepted: {', '.join(_DIFFUSERS_PREDICTIONS)}")
    mc = model.config
    size = mc.sample_size if isinstance(mc.sample_size, (tuple, list)) else (mc.sample_size, mc.sample_size)
    num_classes = int(mc.num_class_embeds or 0)
    net = _DiffusersNet(model).eval().requires_grad_(False).to(device)
    meta = {"name": "diffusers", "arch": "diffusers.UNet2DModel", "scheduler": {k: v for k, v in cfg.items() if not k.startswith("_")}}
    # diffusers class embeddings have no null row: labels are passed through as given
    return TrainedDenoiser(net, path, _DIFFUSERS_PREDICTIONS[ptype], shape=(mc.in_channels, *size),
                           num_classes=num_classes, meta=meta, net_dtype=net_dtype,
                           allow_extrapolation=allow_extrapolation)
