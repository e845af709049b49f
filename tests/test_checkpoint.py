"""Checkpoints: save -> load gives the same denoiser, diffusers UNet2DModel adaptation, and the
shipped models (the digits model's samples are classified as the requested class)."""

from __future__ import annotations

import json
import os
from functools import lru_cache

import pytest
import torch

import diffsolve
from diffsolve.denoisers import from_network
from diffsolve.models.checkpoint import SHIPPED, WEIGHTS_DIR, load, save, shipped_models
from diffsolve.nets import build_net


def _meta(arch, kw, path, pred, shape, num_classes):
    return {"arch": arch, "arch_kwargs": kw, "path": path, "prediction": pred, "shape": list(shape),
            "num_classes": num_classes}


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 0.0), (torch.float16, 2e-2)])
def test_save_load_round_trip_unet(tmp_path, dtype, tol):
    kw = {"in_channels": 1, "channels": 8, "channel_mults": [1, 2], "attn_levels": [1], "num_classes": 4, "t_scale": 250.0}
    torch.manual_seed(0)
    net = build_net("unet", **kw)
    for p in net.parameters():  # zero-initialised output layers would make the test vacuous
        p.data.add_(0.05 * torch.randn_like(p))
    net.eval()
    save(str(tmp_path / "m"), net, _meta("unet", kw, "edm", "edm", (1, 8, 8), 4), dtype=dtype)
    model = load(str(tmp_path / "m.json"))
    assert model.shape == (1, 8, 8) and model.num_classes == 4 and model.path.name == "edm"
    ref = from_network(net, "edm", "edm", net_dtype=torch.float32)
    y = torch.randn(5, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    s = torch.tensor([0.01, 0.1, 1.0, 5.0, 60.0], dtype=torch.float64)
    lab = torch.tensor([0, 1, 2, 3, 4])
    with torch.no_grad():
        want = ref(y, s, labels=lab)
    got = model(y, s, labels=lab)
    assert got.dtype == torch.float64
    err = float((got - want).abs().max() / want.abs().max())
    assert err <= tol + 1e-7, err
    assert not torch.allclose(got[:4], model(y, s)[:4])  # labels matter


def test_load_accepts_directory_prefix_and_safetensors(tmp_path):
    kw = {"dim": 2, "hidden": 8, "depth": 1}
    net = build_net("mlp", **kw)
    save(str(tmp_path / "model"), net, _meta("mlp", kw, "flow", "velocity", (2,), 0))
    for ref in (str(tmp_path), str(tmp_path / "model"), str(tmp_path / "model.safetensors")):
        assert load(ref).prediction == "velocity"
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["format"] == "diffsolve-checkpoint/1" and meta["weights"] == "model.safetensors"


def test_load_errors_name_the_accepted_values(tmp_path):
    with pytest.raises(ValueError, match="unknown model 'nonesuch'; accepted"):
        load("nonesuch")
    with pytest.raises(FileNotFoundError):
        load(str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="lacks"):
        save(str(tmp_path / "x"), build_net("mlp"), {"arch": "mlp"})


# --- diffusers -------------------------------------------------------------------------------

def _tiny_unet(num_class_embeds=None):
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                       block_out_channels=(8, 16), norm_num_groups=4,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       num_class_embeds=num_class_embeds)
    for p in unet.parameters():
        p.data.add_(0.02 * torch.randn_like(p))
    return unet.eval()


@pytest.mark.parametrize("beta_schedule,ptype", [("linear", "epsilon"), ("scaled_linear", "v_prediction"),
                                                 ("squaredcos_cap_v2", "sample")])
def test_diffusers_unet_with_scheduler(beta_schedule, ptype):
    from diffusers import DDPMScheduler

    unet = _tiny_unet()
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule=beta_schedule, prediction_type=ptype)
    model = load(unet, sched)
    assert model.shape == (1, 8, 8)
    # the path is the scheduler's table
    abar = sched.alphas_cumprod.double()
    assert torch.allclose(model.path.alphas_cumprod, abar, rtol=1e-6)
    # at integer timesteps the denoiser is the scheduler's own x0 formula
    k = torch.tensor([10, 250, 600, 990])
    a, sg = abar[k].sqrt(), (1 - abar[k]).sqrt()
    s = sg / a
    y = torch.randn(4, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    x = (a[:, None, None, None] * y).float()
    with torch.no_grad():
        out = unet(x, k).sample.double()
    a4, s4 = a[:, None, None, None], sg[:, None, None, None]
    want = {"epsilon": (x.double() - s4 * out) / a4, "v_prediction": a4 * x.double() - s4 * out, "sample": out}[ptype]
    got = model(y, s)
    assert float((got - want).abs().max()) < 1e-3 * float(want.abs().max())


def test_diffusers_directory_with_class_labels(tmp_path):
    from diffusers import DDPMScheduler

    unet = _tiny_unet(num_class_embeds=3)
    unet.save_pretrained(str(tmp_path / "unet"))
    DDPMScheduler(num_train_timesteps=1000).save_pretrained(str(tmp_path / "scheduler"))
    model = diffsolve.load(str(tmp_path / "unet"))
    assert model.num_classes == 3 and model.prediction == "eps"
    noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    res = diffsolve.sample(model, noise, solver="ddim", nfe=3, cond={"labels": torch.tensor([0, 2])})
    assert res.nfe == 3 and bool(torch.isfinite(res.samples).all())


# --- shipped models --------------------------------------------------------------------------

def test_shipped_models_are_registered_and_load():
    present = shipped_models()
    assert "digits" in present, f"digits weights missing from {WEIGHTS_DIR}"
    for name in present:
        m = load(name)
        meta = m.meta
        assert meta["name"] == name and m.shape == tuple(meta["shape"])
        assert os.path.getsize(os.path.join(WEIGHTS_DIR, name + ".safetensors")) < 4_000_000
        assert "command" in meta["training"]
    assert set(present) <= set(SHIPPED)


@lru_cache(maxsize=1)
def _digit_classifier():
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    d = load_digits()
    x = d.images.reshape(len(d.images), -1) / 16.0 * 2 - 1
    return LogisticRegression(max_iter=2000).fit(x, d.target)


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_shipped_digits_samples_have_the_requested_class(scale):
    model = diffsolve.load("digits")
    n = 100
    labels = torch.arange(n) % 10
    noise = torch.randn(n, *model.shape, generator=torch.Generator().manual_seed(0))
    den = model if scale == 1.0 else diffsolve.CFG(model, scale)
    res = diffsolve.sample(den, noise, solver="dpm++2m", nfe=20, cond={"labels": labels})
    x = res.samples.float().reshape(n, -1).clamp(-1, 1).numpy()
    acc = float((_digit_classifier().predict(x) == labels.numpy()).mean())
    assert acc > 0.7, acc  # chance is 0.1


def _energy_distance(a, b):
    return float(2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean())


@pytest.mark.parametrize("name", ["moons", "rings", "checker"])
def test_shipped_2d_models_match_their_data(name):
    from diffsolve.data import toy_2d

    if name not in shipped_models():
        pytest.fail(f"{name} weights missing from {WEIGHTS_DIR}")
    model = load(name)
    n = 600
    data = toy_2d(name, n, seed=1).double()
    noise = torch.randn(n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = diffsolve.sample(model, noise, solver="dpm++2m", nfe=50).samples
    # measured: ~0.002 for the models vs ~0.04-0.07 for the Gaussian they start from
    assert _energy_distance(x, data) < 0.2 * _energy_distance(noise, data)
