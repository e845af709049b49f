"""Trained character text models: the masked-diffusion denoiser and the autoregressive reference,
loaded from the text checkpoint format written by ``diffsolve train-text``.

A text checkpoint is ``NAME.json`` + ``NAME.safetensors`` (a run directory holds ``model.json`` +
``model.safetensors``). The JSON has ``format`` ``"diffsolve-text/1"``, ``kind`` (``"masked"``
or ``"autoregressive"``), ``arch`` ``"char-transformer"``, ``arch_kwargs`` (the arguments of
:class:`~diffsolve.nets.transformer.CharTransformer`), ``vocab`` (the V characters, token id =
index), ``weights`` (the weights file's name) and a ``training`` record.

* :class:`MaskedTextModel` is a :class:`~diffsolve.discrete.base.TokenDenoiser`:
  ``probs(x) -> (B, L, V)`` float64 clean-token probabilities of a partly masked sequence.
* :class:`ARTextModel` scores text (``log_prob``, ``nll_per_char``, ``conditionals``) and
  samples it left to right with per-sample seeds.
* :func:`load_text_model` reads either (a shipped name ``"shakespeare"`` / ``"shakespeare-ar"``,
  a run directory or a JSON path), refusing a bad file with its path and what is wrong.

    >>> import torch
    >>> from diffsolve.nets.transformer import CharTransformer
    >>> torch.manual_seed(0) and None
    >>> m = MaskedTextModel(CharTransformer(3, dim=8, depth=1, heads=2, max_len=6), "abc")
    >>> x = m.encode("abc")[None]
    >>> x[0, 1] = m.mask_id                      # "a_c"
    >>> p = m.probs(x)
    >>> p.shape, p.dtype, p[0, 0].tolist(), round(float(p[0, 1].sum()), 12)
    (torch.Size([1, 3, 3]), torch.float64, [1.0, 0.0, 0.0], 1.0)
    >>> ar = ARTextModel(CharTransformer(3, dim=8, depth=1, heads=2, max_len=6, causal=True), "abc")
    >>> x = ar.sample(2, 5, seeds=[0, 1])
    >>> x.shape, bool((x == ar.sample(2, 5, seeds=[0, 1])).all())
    (torch.Size([2, 5]), True)
    >>> ar.log_prob(x).dtype
    torch.float64
"""

from __future__ import annotations

import inspect
import json
import math
import numbers
import os
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..nets.transformer import CharTransformer
from ..noise import NoiseSource, check_seeds
from .base import TokenDenoiser, check_token_ids

__all__ = ["MaskedTextModel", "ARTextModel", "load_text_model", "locate_text_model", "TEXT_FORMAT", "TEXT_SHIPPED",
           "TEXT_KINDS", "shipped_text_models"]

#: the ``format`` field of a text checkpoint's JSON (as written by diffsolve.discrete.train)
TEXT_FORMAT = "diffsolve-text/1"
#: shipped text model names (files NAME.json / NAME.safetensors in the shipped weights folder)
TEXT_SHIPPED = ("shakespeare", "shakespeare-ar")
#: the ``kind`` field: which class a checkpoint loads as
TEXT_KINDS = {"masked": "MaskedTextModel", "autoregressive": "ARTextModel"}
#: the shipped weights folder (= diffsolve.models.checkpoint.WEIGHTS_DIR; computed here so that the
#: discrete engine does not import the model registry above it)
WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models", "weights")
_SHOW = 5


def shipped_text_models() -> list[str]:
    """Names of the shipped text models whose weights are present."""
    return [n for n in TEXT_SHIPPED if os.path.exists(os.path.join(WEIGHTS_DIR, n + ".json"))]


def _device_of(net: torch.nn.Module) -> torch.device:
    p = next(net.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _check_net(net: Any, vocab: str, causal: bool, cls: str) -> None:
    if not isinstance(net, CharTransformer):
        raise TypeError(f"{cls} wraps a CharTransformer, got {type(net).__name__}")
    if bool(net.causal) != causal:
        raise ValueError(f"{cls} needs a {'causal' if causal else 'bidirectional'} CharTransformer "
                         f"(causal={causal}), got causal={net.causal}")
    if not isinstance(vocab, str) or len(vocab) != net.vocab_size or len(set(vocab)) != len(vocab):
        raise ValueError(f"vocab must be a string of {net.vocab_size} distinct characters (the network's vocab_size), "
                         f"got {vocab!r}")


def _check_batch_size(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
        raise ValueError(f"batch_size must be a positive integer, got {v!r}")
    return int(v)


class MaskedTextModel(TokenDenoiser):
    """A bidirectional :class:`CharTransformer` as a time-free masked-diffusion denoiser.

    ``probs(x, t=None)``: the softmax (in float64) of the network's logits at every position of
    ``x`` (B, L) (token ids, ``mask_id`` = V at masked places); unmasked rows are the one-hot of
    their token. The network runs without gradients on its own device in chunks of
    ``batch_size`` rows; the result is on ``x``'s device. ``t`` is ignored (``time_free``).

    Attributes: ``net``, ``vocab``, ``vocab_size``, ``mask_id``, ``max_len``, ``meta`` (the
    checkpoint's JSON, or ``{}``), ``batch_size``.
    """

    time_free = True

    def __init__(self, net: CharTransformer, vocab: str, meta: dict | None = None, batch_size: int = 64):
        _check_net(net, vocab, False, type(self).__name__)
        self.net = net.eval().requires_grad_(False)
        self.vocab, self.vocab_size, self.max_len = vocab, int(net.vocab_size), int(net.max_len)
        self.meta = dict(meta or {})
        self.batch_size = _check_batch_size(batch_size)

    def logits(self, x: Tensor) -> Tensor:
        """The network's logits (B, L, V) as float64 on ``x``'s device (no one-hot rows)."""
        return self._logits(self.check_tokens(x, "x"))

    def _logits(self, x: Tensor) -> Tensor:
        b, n = x.shape
        if b == 0 or n == 0:
            return torch.zeros(b, n, self.vocab_size, dtype=torch.float64, device=x.device)
        dev = _device_of(self.net)
        with torch.no_grad():
            out = [self.net(c.to(dev)).to(torch.float64) for c in x.split(self.batch_size)]
        return torch.cat(out).to(x.device)

    def probs(self, x: Tensor, t: float | None = None) -> Tensor:
        x = self.check_tokens(x, "x")
        return self.keep_unmasked(x, torch.softmax(self._logits(x), dim=-1))

    def __repr__(self) -> str:
        return (f"MaskedTextModel({self.meta.get('name', '?')!r}, vocab_size={self.vocab_size}, "
                f"max_len={self.max_len})")


class ARTextModel:
    """A causal :class:`CharTransformer` as a left-to-right character model with a
    beginning-of-sequence token (id ``bos_id`` = V) in front.

    ``log_prob(x)`` (B,) float64 is ``sum_i log p(x_i | BOS, x_<i)``; ``nll_per_char(x)`` is
    ``-log_prob(x) / L``; ``conditionals(x)`` (B, L, V) float64 holds ``p(. | BOS, x_<i)``;
    ``sample(num, length, seeds)`` draws text with per-sample seeds. Scoring runs in chunks of
    ``batch_size`` rows without gradients. ``L <= max_len``.
    """

    time_free = True

    def __init__(self, net: CharTransformer, vocab: str, meta: dict | None = None, batch_size: int = 64):
        _check_net(net, vocab, True, type(self).__name__)
        self.net = net.eval().requires_grad_(False)
        self.vocab, self.vocab_size, self.max_len = vocab, int(net.vocab_size), int(net.max_len)
        self.bos_id = self.vocab_size
        self.meta = dict(meta or {})
        self.batch_size = _check_batch_size(batch_size)

    encode = TokenDenoiser.encode

    def decode(self, tokens: Tensor) -> str:
        """The text of a 1-D id tensor."""
        return "".join(self.vocab[i] for i in tokens.tolist())

    def check_tokens(self, x: Any, name: str = "x") -> Tensor:
        """``x`` as a (B, L) long tensor of character ids in [0, V), L <= max_len; else named."""
        return check_token_ids(x, name, self.vocab_size - 1, self.max_len, "the characters; no mask or BOS tokens")

    def _log_conditionals(self, x: Tensor) -> Tensor:
        """(B, L, V) float64 log p(. | BOS, x_<i) on x's device (x checked)."""
        b, n = x.shape
        if b == 0 or n == 0:
            return torch.zeros(b, n, self.vocab_size, dtype=torch.float64, device=x.device)
        dev = _device_of(self.net)
        out = []
        with torch.no_grad():
            for c in x.split(self.batch_size):
                c = c.to(dev)
                inp = torch.cat([torch.full_like(c[:, :1], self.bos_id), c[:, :-1]], 1)
                out.append(torch.log_softmax(self.net(inp).to(torch.float64), -1).to(x.device))
        return torch.cat(out)

    def conditionals(self, x: Tensor) -> Tensor:
        """(B, L, V) float64: row i is ``p(x_i = . | BOS, x_<i)`` (rows sum to 1)."""
        return self._log_conditionals(self.check_tokens(x)).exp()

    def log_prob(self, x: Tensor) -> Tensor:
        """(B,) float64 total log-likelihood of each row of ``x`` (BOS in front)."""
        x = self.check_tokens(x)
        if x.shape[1] == 0:
            return torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
        b = self.batch_size
        # chunk here too, so that only one chunk's (b, L, V) table is alive at a time
        parts = [self._log_conditionals(c).gather(-1, c[..., None])[..., 0].sum(1) for c in x.split(b)]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64, device=x.device)

    def nll_per_char(self, x: Tensor) -> Tensor:
        """(B,) float64 negative log-likelihood per character, nats."""
        x = self.check_tokens(x)
        if x.shape[1] == 0:
            raise ValueError("x has length 0; the NLL per character needs at least one character")
        return -self.log_prob(x) / x.shape[1]

    def sample(self, num: int, length: int, seeds: Sequence[int] | Tensor, temperature: float = 1.0) -> Tensor:
        """(num, length) long character ids drawn left to right (on the network's device).

        Position k of sample b is the Gumbel-max draw ``argmax_v log p(v | ...) / temperature +
        G_v`` with ``G_v = -log(-log u_v)`` and ``u = NoiseSource(seeds).uniform(k, (V,))``, all in
        float64: a sample depends only on its seed (not on the batch around it, up to the
        network's float32 arithmetic)."""
        for k, v in (("num", num), ("length", length)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise ValueError(f"{k} must be a positive integer, got {v!r}")
        if length > self.max_len:
            raise ValueError(f"length {length} exceeds this model's max_len {self.max_len}")
        if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or \
                not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        seeds = check_seeds(seeds)
        if len(seeds) != num:
            raise ValueError(f"got {len(seeds)} seeds for {num} samples; pass one seed per sample")
        src = NoiseSource(seeds)
        dev = _device_of(self.net)
        x = torch.full((num, 1), self.bos_id, dtype=torch.long, device=dev)
        with torch.no_grad():
            for k in range(length):
                logp = torch.log_softmax(self.net(x)[:, -1].to(torch.float64), -1)
                u = src.uniform(k, (self.vocab_size,), device=dev)
                x = torch.cat([x, (logp / temperature - torch.log(-torch.log(u))).argmax(-1, keepdim=True)], 1)
        return x[:, 1:]

    def __repr__(self) -> str:
        return f"ARTextModel({self.meta.get('name', '?')!r}, vocab_size={self.vocab_size}, max_len={self.max_len})"


# ---------------------------------------------------------------------------------------
# loading


def locate_text_model(name_or_path: Any) -> str:
    """The JSON file of a shipped text model name, a run directory (``model.json`` inside), a
    ``.json`` / ``.safetensors`` path or a prefix without extension."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"a text model is a name or a path (str), got {type(name_or_path).__name__}")
    p = os.fspath(name_or_path)
    if p in TEXT_SHIPPED or (os.sep not in p and not os.path.exists(p) and not p.endswith((".json", ".safetensors"))):
        j = os.path.join(WEIGHTS_DIR, p + ".json")
        if os.path.exists(j):
            return j
        if p in TEXT_SHIPPED:
            raise FileNotFoundError(f"shipped text model {p!r} has no weights in {WEIGHTS_DIR}; train it with: "
                                    f"diffsolve train-text --preset {p} --export")
        raise ValueError(f"unknown text model {p!r}; accepted: {', '.join(TEXT_SHIPPED)} (present: "
                         f"{', '.join(shipped_text_models()) or 'none'}), a run directory or a .json path")
    if os.path.isdir(p):
        j = os.path.join(p, "model.json")
        if not os.path.exists(j):
            raise FileNotFoundError(f"{p}: no model.json in this directory (written every few minutes by "
                                    "diffsolve train-text)")
        return j
    if p.endswith(".safetensors"):
        p = p[: -len(".safetensors")] + ".json"
    elif not p.endswith(".json"):
        p = p + ".json"
    if not os.path.exists(p):
        raise FileNotFoundError(f"{p}: text model metadata not found")
    return p


def _read_meta(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a UTF-8 text file (byte {e.start})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: a text model's JSON must be an object, got {type(meta).__name__}")
    return meta


def _check_text_meta(meta: dict, path: str) -> dict:
    """The checked ``arch_kwargs`` of a text checkpoint's JSON; a ValueError names the problem."""
    if meta.get("format") != TEXT_FORMAT:
        raise ValueError(f"{path}: not a diffsolve text model (format {meta.get('format')!r}, expected "
                         f"{TEXT_FORMAT!r})")
    missing = [k for k in ("kind", "arch", "arch_kwargs", "vocab") if k not in meta]
    if missing:
        raise ValueError(f"{path}: missing required key(s) {', '.join(missing)}")
    if meta["kind"] not in TEXT_KINDS:
        raise ValueError(f"{path}: unknown kind {meta['kind']!r}; accepted: {', '.join(TEXT_KINDS)}")
    if meta["arch"] != "char-transformer":
        raise ValueError(f"{path}: unknown arch {meta['arch']!r}; accepted: char-transformer")
    kw = meta["arch_kwargs"]
    if not isinstance(kw, dict):
        raise ValueError(f"{path}: arch_kwargs must be an object (CharTransformer's arguments), got {kw!r}")
    params = [k for k in inspect.signature(CharTransformer.__init__).parameters if k != "self"]
    unknown = sorted(set(kw) - set(params))
    if unknown:
        raise ValueError(f"{path}: arch_kwargs has unknown key(s) {', '.join(unknown)}; CharTransformer takes "
                         f"{', '.join(params)}")
    v = kw.get("vocab_size")
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{path}: arch_kwargs.vocab_size must be a positive integer, got {v!r}")
    causal = kw.get("causal", False)
    if not isinstance(causal, bool) or causal != (meta["kind"] == "autoregressive"):
        raise ValueError(f"{path}: kind {meta['kind']!r} needs arch_kwargs.causal = "
                         f"{meta['kind'] == 'autoregressive'}, got {causal!r}")
    vocab = meta["vocab"]
    if not isinstance(vocab, str):
        raise ValueError(f"{path}: vocab must be a string (token id = index), got {type(vocab).__name__}")
    if len(vocab) != v:
        raise ValueError(f"{path}: vocab has {len(vocab)} characters but arch_kwargs.vocab_size is {v}; "
                         "the two must agree")
    if len(set(vocab)) != len(vocab):
        dup = sorted({c for c in vocab if vocab.count(c) > 1})
        raise ValueError(f"{path}: vocab repeats the character(s) {dup!r}")
    if "weights" in meta and not isinstance(meta["weights"], str):
        raise ValueError(f"{path}: weights must be the weights file's name (a string), got {meta['weights']!r}")
    return kw


def _names(keys: list[str]) -> str:
    return ", ".join(keys[:_SHOW]) + (f" and {len(keys) - _SHOW} more" if len(keys) > _SHOW else "")


def _load_weights(net: CharTransformer, meta: dict, meta_path: str) -> None:
    from safetensors.torch import load_file

    d = os.path.dirname(meta_path)
    sibling = os.path.basename(meta_path)[: -len(".json")] + ".safetensors"
    named = os.path.join(d, meta.get("weights") or sibling)
    wpath = next((p for p in (named, os.path.join(d, sibling)) if os.path.isfile(p)), None)
    if wpath is None:
        raise FileNotFoundError(f"{named}: weights file not found (named by the 'weights' field of {meta_path})")
    try:
        sd = load_file(wpath)
    except Exception as e:  # safetensors raises its own error types
        raise ValueError(f"{wpath}: not a readable safetensors file ({os.path.getsize(wpath)} bytes; truncated or "
                         f"corrupted?): {type(e).__name__}: {e}") from None
    want = net.state_dict()
    missing, unexpected = [k for k in want if k not in sd], [k for k in sd if k not in want]
    if missing or unexpected:
        parts = ([f"missing {_names(missing)}"] if missing else []) + \
                ([f"unexpected {_names(unexpected)}"] if unexpected else [])
        raise ValueError(f"{wpath}: the weights do not match the network of {meta_path}: " + "; ".join(parts))
    shapes = [f"{k} {list(sd[k].shape)} (expected {list(want[k].shape)})" for k in want if sd[k].shape != want[k].shape]
    if shapes:
        hint = (f" (the JSON's vocab has {net.vocab_size} characters: tok.weight has vocab_size + 1 rows, out.weight "
                "vocab_size)" if any(s.startswith(("tok.weight", "out.")) for s in shapes) else "")
        raise ValueError(f"{wpath}: {len(shapes)} tensor(s) have the wrong shape: {_names(shapes)}{hint}")
    kinds = [k for k in want if not sd[k].is_floating_point()]
    if kinds:
        raise ValueError(f"{wpath}: tensor(s) {_names(kinds)} are {sd[kinds[0]].dtype}, expected floating point")
    bad = [k for k in want if not bool(torch.isfinite(sd[k]).all())]
    if bad:
        raise ValueError(f"{wpath}: non-finite weights (NaN or inf) in {_names(bad)}")
    net.load_state_dict({k: v.float() for k, v in sd.items()})


def load_text_model(name_or_path: Any, device: str | torch.device = "cpu") -> MaskedTextModel | ARTextModel:
    """The text model of a shipped name (``"shakespeare"``, ``"shakespeare-ar"``), a run
    directory, or a checkpoint path: a :class:`MaskedTextModel` (``kind`` ``"masked"``) or an
    :class:`ARTextModel` (``"autoregressive"``), its network in eval mode on ``device``.

    Strict: a wrong format, kind or arch, unknown arch_kwargs, a vocab that disagrees with
    ``vocab_size`` or with the weights, missing / unexpected / misshapen / non-finite tensors
    are refused with a ValueError naming the file and the problem."""
    meta_path = locate_text_model(name_or_path)
    meta = _read_meta(meta_path)
    kw = _check_text_meta(meta, meta_path)
    try:
        net = CharTransformer(**kw)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{meta_path}: arch_kwargs {kw!r} do not build a CharTransformer: {e}") from None
    _load_weights(net, meta, meta_path)
    net.eval().requires_grad_(False).to(device)
    base = os.path.basename(meta_path)[: -len(".json")]
    meta.setdefault("name", os.path.basename(os.path.dirname(os.path.abspath(meta_path))) if base == "model" else base)
    cls = MaskedTextModel if meta["kind"] == "masked" else ARTextModel
    return cls(net, meta["vocab"], meta)
