"""Classifier-free guidance: scale 1 is the conditional denoiser, scale 0 the unconditional
one, the eps-form identity, the guidance interval per row, and one batched call per NFE."""

from __future__ import annotations

import math

import pytest
import torch

import diffsolve
from diffsolve import CFG
from diffsolve.denoisers import Denoiser


class Toy(Denoiser):
    """A conditional denoiser with a visible label effect; counts calls and rows."""

    num_classes = 3
    null_label = 3

    def __init__(self):
        self.calls, self.rows = 0, []

    def denoise(self, y, s, labels=None, **cond):
        self.calls += 1
        self.rows.append(y.shape[0])
        if labels is None:
            labels = torch.full((y.shape[0],), 3)
        shift = labels.to(y.dtype)[:, None] - 1.0
        return y / (1 + s[:, None] ** 2) + shift * torch.tanh(s)[:, None]


def _inputs(b=6):
    g = torch.Generator().manual_seed(0)
    y = torch.randn(b, 2, dtype=torch.float64, generator=g)
    s = torch.tensor([0.05, 0.3, 1.0, 2.0, 5.0, 20.0], dtype=torch.float64)[:b]
    labels = torch.tensor([0, 1, 2, 0, 1, 2])[:b]
    return y, s, labels


def test_scale_one_is_conditional_and_zero_unconditional():
    toy = Toy()
    y, s, lab = _inputs()
    cond, uncond = toy(y, s, labels=lab), toy(y, s)
    assert torch.equal(CFG(toy, 1.0)(y, s, labels=lab), cond)
    assert torch.allclose(CFG(toy, 0.0)(y, s, labels=lab), uncond, atol=1e-15)
    w = 2.5
    got = CFG(toy, w)(y, s, labels=lab)
    assert torch.allclose(got, uncond + w * (cond - uncond), atol=1e-14)
    # the same guidance written on eps = (y - D) / s (Ho & Salimans Eq. 6)
    eps = lambda d: (y - d) / s[:, None]
    eps_cfg = (1 - w) * eps(uncond) + w * eps(cond)
    assert torch.allclose(eps(got), eps_cfg, atol=1e-12)


def test_no_labels_is_refused_not_silently_unconditional():
    toy = Toy()
    y, s, _ = _inputs()
    with pytest.raises(ValueError, match="labels"):
        CFG(toy, 3.0)(y, s)
    # the unconditional model is asked for explicitly, with the null label
    assert torch.equal(CFG(toy, 3.0)(y, s, labels=torch.full((6,), 3)), toy(y, s))


def test_guidance_interval_is_honoured_per_row():
    toy = Toy()
    y, s, lab = _inputs()
    lo, hi = 0.2, 3.0
    got = CFG(toy, 4.0, interval=(lo, hi))(y, s, labels=lab)
    full = CFG(toy, 4.0)(y, s, labels=lab)
    cond = toy(y, s, labels=lab)
    inside = (s >= lo) & (s <= hi)
    assert inside.any() and (~inside).any()
    assert torch.equal(got[inside], full[inside])
    assert torch.equal(got[~inside], cond[~inside])
    assert not torch.allclose(full[~inside], cond[~inside])


def test_one_batched_call_of_2b_rows_per_evaluation():
    toy = Toy()
    y, s, lab = _inputs()
    CFG(toy, 2.0)(y, s, labels=lab)
    assert toy.calls == 1 and toy.rows == [12]
    toy.calls, toy.rows = 0, []
    CFG(toy, 2.0, interval=(100.0, 200.0))(y, s, labels=lab)      # nothing to guide: B rows
    assert toy.calls == 1 and toy.rows == [6]


def test_driver_counts_a_cfg_call_as_one_nfe():
    toy = Toy()
    noise = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    guided = CFG(toy, 3.0, interval=(0.5, math.inf))
    res = diffsolve.sample(guided, noise, solver="dpm++2m", nfe=8, cond={"labels": torch.tensor([0, 1, 2, 0])},
                           s_min=0.01, s_max=20.0)
    assert res.nfe == 8 == toy.calls
    # rows doubled exactly at the levels inside the interval
    inside = [float(v) >= 0.5 for v in res.eval_levels]
    assert toy.rows == [8 if i else 4 for i in inside]


def test_bad_interval_and_missing_null_label():
    with pytest.raises(ValueError, match="interval"):
        CFG(Toy(), 2.0, interval=(3.0, 1.0))
    with pytest.raises(ValueError, match="null_label"):
        CFG(lambda y, s, **k: y, 2.0)
