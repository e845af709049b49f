"""Shipped auxiliary networks (classifiers next to the diffusion models): a name -> the
``WEIGHTS_DIR/<file>.json`` + ``.safetensors`` pair, read once, built as a frozen float32
module in eval mode (its *input* gradient still flows: guidance and steering need it).

    >>> import torch
    >>> from diffsolve.nets.verifier import ResidualVerifier
    >>> nets = ShippedNets("verifier", {"mnist": "mnist-verifier"}, {"ResidualVerifier": ResidualVerifier},
    ...                    rebuild="diffsolve train-verifier --out runs/verifier --export")
    >>> net = nets.load("mnist")
    >>> net(torch.zeros(1, 1, 28, 28)).shape, any(p.requires_grad for p in net.parameters())
    (torch.Size([1, 10]), False)
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from typing import Any

import torch
from torch import nn

from .checkpoint import WEIGHTS_DIR

__all__ = ["ShippedNets"]


class ShippedNets:
    """The shipped networks of one kind: ``names`` (accepted name -> file name in WEIGHTS_DIR),
    ``archs`` (the JSON's ``arch`` -> module class) and how to ``rebuild`` missing files."""

    def __init__(self, kind: str, names: dict[str, str], archs: dict[str, type], rebuild: str):
        self.kind, self.names, self.archs, self.rebuild = kind, dict(names), dict(archs), rebuild
        self.meta = lru_cache(maxsize=None)(self._meta)
        self._state = lru_cache(maxsize=None)(self._read_state)

    def files(self, name: str) -> tuple[str, str]:
        """The JSON and safetensors paths of ``name`` (a ValueError names the accepted ones)."""
        if not isinstance(name, str) or name not in self.names:
            raise ValueError(f"unknown {self.kind} {name!r}; accepted: {', '.join(self.names)}")
        base = os.path.join(WEIGHTS_DIR, self.names[name])
        for ext in (".json", ".safetensors"):
            if not os.path.exists(base + ext):
                raise FileNotFoundError(f"shipped {self.kind} {name!r} missing: {base + ext}; rebuild it with: "
                                        f"{self.rebuild}")
        return base + ".json", base + ".safetensors"

    def _meta(self, name: str) -> dict[str, Any]:
        with open(self.files(name)[0]) as f:
            return json.load(f)

    def _read_state(self, name: str) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return load_file(self.files(name)[1])

    def load(self, name: str) -> nn.Module:
        """A new module each call: float32, eval mode, CPU, parameters frozen."""
        meta = self.meta(name)
        if meta.get("arch") not in self.archs:
            raise ValueError(f"{self.files(name)[0]}: unknown {self.kind} architecture {meta.get('arch')!r}; "
                             f"accepted: {', '.join(self.archs)}")
        net = self.archs[meta["arch"]](**meta["arch_kwargs"])
        net.load_state_dict({k: v.clone() for k, v in self._state(name).items()})
        net = net.float().eval()
        for p in net.parameters():
            p.requires_grad_(False)
        return net
