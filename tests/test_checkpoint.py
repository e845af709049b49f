"""Checkpoints: save -> load gives the same denoiser, diffusers UNet2DModel adaptation, and the
shipped models (the digits model's samples are classified as the requested class)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
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
    with pytest.raises(ValueError, match="missing required keys arch_kwargs, path, prediction, shape"):
        save(str(tmp_path / "x"), build_net("mlp"), {"arch": "mlp"})


# --- broken checkpoints are refused with the file named ------------------------------------

@pytest.fixture
def digits_copy(tmp_path):
    """A copy of the shipped digits checkpoint in tmp_path: (json path, safetensors path)."""
    paths = tuple(str(tmp_path / f"digits.{ext}") for ext in ("json", "safetensors"))
    for p in paths:
        shutil.copy(os.path.join(WEIGHTS_DIR, os.path.basename(p)), p)
    return paths


def _refused(path, err, match, exc=ValueError):
    """load(path) raises exc whose message starts with the file ``err`` and matches ``match``."""
    with pytest.raises(exc, match=match) as info:
        load(path)
    assert str(info.value).startswith(err + ":") or str(info.value).startswith(err + " "), str(info.value)
    return str(info.value)


def _edit_json(path, edit):
    meta = json.loads(open(path).read())
    edit(meta)
    with open(path, "w") as f:
        json.dump(meta, f)


def _edit_weights(path, edit):
    from safetensors.torch import load_file, save_file

    sd = load_file(path)
    edit(sd)
    save_file(sd, path)


def test_the_copy_loads_and_matches_the_shipped_model(digits_copy):
    a, b = load(digits_copy[0]), load("digits")
    y = torch.randn(3, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    s = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    assert torch.equal(a(y, s, labels=torch.tensor([1, 2, 10])), b(y, s, labels=torch.tensor([1, 2, 10])))


def test_invalid_json_names_the_file_and_line(digits_copy):
    text = open(digits_copy[0]).read().replace('"arch": "mlp"', '"arch": mlp', 1)
    open(digits_copy[0], "w").write(text)
    line = 1 + text[: text.index('"arch": mlp')].count("\n")
    _refused(digits_copy[0], digits_copy[0], rf"not valid JSON \(line {line}, column \d+")


def test_non_utf8_and_non_object_json_are_refused(digits_copy):
    open(digits_copy[0], "wb").write(b"\xff\xfe{}")
    _refused(digits_copy[0], digits_copy[0], "not a UTF-8 text file")
    open(digits_copy[0], "w").write("[1, 2]")
    _refused(digits_copy[0], digits_copy[0], "not a diffsolve checkpoint")


@pytest.mark.parametrize("key", ["arch", "arch_kwargs", "path", "prediction", "shape"])
def test_missing_required_key_is_named(digits_copy, key):
    _edit_json(digits_copy[0], lambda m: m.pop(key))
    _refused(digits_copy[0], digits_copy[0], rf"missing required key {key} ")


@pytest.mark.parametrize("key,value,match", [
    ("arch", "resnet", "unknown arch 'resnet'; accepted: unet, mlp"),
    ("arch", ["mlp"], "unknown arch"),
    ("arch_kwargs", [256, 3], "arch_kwargs must be an object"),
    ("path", "ddpm-linaer", "unknown path 'ddpm-linaer'; accepted: .*ddpm-linear"),
    ("prediction", "epsilon", "unknown prediction 'epsilon'; accepted: .*eps"),
    ("shape", [1, -8, 8], r"shape must be a non-empty list of positive integers .*\[1, -8, 8\]"),
    ("shape", [1, 8.5, 8], "shape must be"),
    ("shape", "1x8x8", "shape must be"),
    ("shape", [], "shape must be"),
    ("shape", [1, 8, 9], r"does not take data of shape \[1, 8, 9\]"),
    ("num_classes", -1, "num_classes must be an integer >= 0.*-1"),
    ("num_classes", 2.5, "num_classes must be an integer"),
    ("num_classes", True, "num_classes must be an integer"),
    ("num_classes", 5, "num_classes is 5 but arch_kwargs.num_classes is 10"),
    ("sigma_data", 0, "sigma_data must be a finite number > 0, got 0"),
    ("sigma_data", -0.5, "sigma_data must be"),
    ("sigma_data", float("nan"), "sigma_data must be a finite number > 0, got nan"),
    ("sigma_data", float("inf"), "sigma_data must be"),
    ("sigma_data", "0.5", "sigma_data must be"),
    ("value_range", [1.0, -1.0], "value_range must be"),
    ("class_names", ["0", "1"], "class_names must be a list of 10 strings"),
    ("weights", 3, "weights must be the weights file's name"),
])
def test_bad_json_values_are_refused(digits_copy, key, value, match):
    _edit_json(digits_copy[0], lambda m: m.__setitem__(key, value))
    _refused(digits_copy[0], digits_copy[0], match)


def test_arch_kwargs_that_do_not_fit_the_arch_are_refused(digits_copy):
    _edit_json(digits_copy[0], lambda m: m["arch_kwargs"].__setitem__("widht", 3))
    _refused(digits_copy[0], digits_copy[0], "arch_kwargs .* do not fit arch 'mlp'.*widht")


@pytest.mark.parametrize("n", [0, 5])
def test_num_classes_inconsistent_with_the_class_embedding(digits_copy, n):
    # JSON and arch_kwargs agree with each other but not with the weights (10 classes + null):
    # such a checkpoint used to load and make CFG a no-op (n=0) or crash late (n=5)
    def edit(m):
        m["num_classes"], m["class_names"] = n, [str(i) for i in range(n)]
        if n:
            m["arch_kwargs"]["num_classes"] = n
        else:
            m["arch_kwargs"].pop("num_classes")
    _edit_json(digits_copy[0], edit)
    _refused(digits_copy[0], digits_copy[1], rf"num_classes is {n} but the weights' class embedding "
             r"cond\.label\.weight is for 10 classes")


def test_missing_weights_file_is_named(digits_copy):
    os.remove(digits_copy[1])
    _refused(digits_copy[0], digits_copy[1], "weights file not found", FileNotFoundError)


def test_truncated_weights_file_is_named(digits_copy):
    data = open(digits_copy[1], "rb").read()
    open(digits_copy[1], "wb").write(data[: len(data) // 2])
    _refused(digits_copy[0], digits_copy[1], r"not a readable safetensors file \(\d+ bytes; truncated or corrupted")


@pytest.mark.parametrize("where", [slice(0, 8), slice(8, 40), slice(20, 21)])
def test_corrupted_weights_header_is_named(digits_copy, where):
    data = bytearray(open(digits_copy[1], "rb").read())
    data[where] = bytes(b ^ 0xA5 for b in data[where])
    open(digits_copy[1], "wb").write(bytes(data))
    _refused(digits_copy[0], digits_copy[1], "not a readable safetensors file")


def test_missing_and_unexpected_tensors_are_named(digits_copy):
    def edit(sd):
        sd.pop("blocks.1.fc2.bias")
        sd["blocks.9.fc1.weight"] = torch.zeros(2)
    _edit_weights(digits_copy[1], edit)
    msg = _refused(digits_copy[0], digits_copy[1], "weights do not match the network")
    assert "missing 1 tensor(s): blocks.1.fc2.bias" in msg and "unexpected 1 tensor(s): blocks.9.fc1.weight" in msg


def test_wrongly_shaped_tensor_is_named(digits_copy):
    _edit_weights(digits_copy[1], lambda sd: sd.__setitem__("blocks.0.fc1.weight", torch.zeros(256, 255)))
    _refused(digits_copy[0], digits_copy[1], re.escape("blocks.0.fc1.weight [256, 255] (expected [256, 256])"))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_name_the_tensor(digits_copy, value):
    def edit(sd):
        sd["blocks.1.fc2.bias"][3] = value
    _edit_weights(digits_copy[1], edit)
    _refused(digits_copy[0], digits_copy[1], r"non-finite weights \(NaN or inf\) in blocks\.1\.fc2\.bias$")


def test_integer_weights_are_refused(digits_copy):
    _edit_weights(digits_copy[1], lambda sd: sd.__setitem__("out.bias", sd["out.bias"].long()))
    _refused(digits_copy[0], digits_copy[1], "out.bias are torch.int64, expected floating point")


def test_directory_without_a_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model.json") as info:
        load(str(tmp_path))
    assert str(info.value).startswith(str(tmp_path) + ":")


def test_save_refuses_what_load_would_refuse_and_writes_nothing(tmp_path):
    kw = {"dim": 2, "hidden": 8, "depth": 1, "num_classes": 3, "t_scale": 1000.0}
    net = build_net("mlp", **kw)
    prefix = str(tmp_path / "m")
    with pytest.raises(ValueError, match=re.escape(prefix + ".json") + ": num_classes is 0 but arch_kwargs.num_classes is 3"):
        save(prefix, net, _meta("mlp", kw, "flow", "velocity", (2,), 0))
    with pytest.raises(ValueError, match="unknown prediction 'velocty'"):
        save(prefix, net, _meta("mlp", kw, "flow", "velocty", (2,), 3))
    with torch.no_grad():
        net.out.weight[0, 0] = math.inf
    with pytest.raises(ValueError, match=re.escape(prefix + ".safetensors") + ": non-finite weights .* out.weight"):
        save(prefix, net, _meta("mlp", kw, "flow", "velocity", (2,), 3))
    with torch.no_grad():
        net.out.weight[0, 0] = 1e6  # finite in float32, inf in float16
    with pytest.raises(ValueError, match="non-finite weights .* out.weight"):
        save(prefix, net, _meta("mlp", kw, "flow", "velocity", (2,), 3), dtype=torch.float16)
    assert os.listdir(tmp_path) == []


# --- save: what it computes wins, what it is given is checked; renamed pairs; paths ---------

def _outputs(net, dim=2):
    g = torch.Generator().manual_seed(3)
    return net(torch.randn(6, dim, generator=g), torch.rand(6, generator=g))


def test_save_computes_weights_format_and_dtype_over_a_passed_meta(tmp_path):
    shutil.copy(os.path.join(WEIGHTS_DIR, "moons.safetensors"), tmp_path)
    rings = load("rings")
    with open(os.path.join(WEIGHTS_DIR, "moons.json")) as f:
        moons_meta = json.load(f)  # weights: moons.safetensors, which lies in tmp_path too
    save(str(tmp_path / "mine"), rings.net, moons_meta, dtype=torch.float32)
    meta = json.loads((tmp_path / "mine.json").read_text())
    assert (meta["weights"], meta["weights_dtype"], meta["format"]) == ("mine.safetensors", "float32",
                                                                      "diffsolve-checkpoint/1")
    assert torch.equal(_outputs(load(str(tmp_path / "mine")).net), _outputs(rings.net))


def test_save_writes_every_constructor_argument(tmp_path):
    import inspect

    from diffsolve.nets import ARCHITECTURES

    save(str(tmp_path / "m"), build_net("mlp", dim=2, hidden=8, depth=1),
         _meta("mlp", {"dim": 2, "hidden": 8, "depth": 1, "t_scale": 1000.0}, "flow", "velocity", (2,), 0))
    kw = json.loads((tmp_path / "m.json").read_text())["arch_kwargs"]
    assert set(kw) == set(inspect.signature(ARCHITECTURES["mlp"]).parameters)


def test_missing_t_scale_is_refused_not_defaulted(digits_copy):
    _edit_json(digits_copy[0], lambda m: m["arch_kwargs"].pop("t_scale"))
    _refused(digits_copy[0], digits_copy[0], r"arch_kwargs lacks t_scale; .*default \(t_scale=1000.0\)")


@pytest.mark.parametrize("args,exc,match", [
    (lambda net, meta: (net, [1]), TypeError, "meta must be a dict .* got list"),
    (lambda net, meta: ("x", meta), TypeError, "net must be a torch.nn.Module or a dict of tensors .* got str"),
    (lambda net, meta: ({"w": 1.0}, meta), TypeError, "net must be a torch.nn.Module or a dict of tensors"),
])
def test_save_refuses_meta_and_net_by_name(tmp_path, args, exc, match):
    kw = {"dim": 2, "hidden": 8, "depth": 1, "t_scale": 1000.0}
    with pytest.raises(exc, match=match):
        save(str(tmp_path / "m"), *args(build_net("mlp", **kw), _meta("mlp", kw, "flow", "velocity", (2,), 0)))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("arch,kw,shape,wrong", [
    ("mlp", {"dim": 2, "hidden": 8, "depth": 1}, (2,), {"t_scale": 1000.0}),
    ("unet", {"in_channels": 1, "channels": 8, "channel_mults": [1, 2], "attn_levels": [1], "t_scale": 250.0},
     (1, 8, 8), {"heads": 1}),
])
def test_save_refuses_arch_kwargs_no_tensor_shows_that_disagree_with_net(tmp_path, arch, kw, shape, wrong):
    torch.manual_seed(0)
    net = build_net(arch, **{**kw, "t_scale": 250.0, "heads": 2} if arch == "unet" else {**kw, "t_scale": 250.0})
    for p in net.parameters():  # zero-initialised output layers would hide the difference
        p.data.add_(0.05 * torch.randn_like(p))
    with pytest.raises(ValueError, match="do not describe net .* give the arguments net was built with"):
        save(str(tmp_path / "m"), net, _meta(arch, {**kw, **wrong}, "flow", "velocity", shape, 0))
    assert os.listdir(tmp_path) == []


def test_a_state_dict_needs_t_scale_given(tmp_path):
    kw = {"dim": 2, "hidden": 8, "depth": 1}
    sd = build_net("mlp", **kw).state_dict()  # nothing in a state dict shows t_scale
    with pytest.raises(ValueError, match="arch_kwargs lacks t_scale"):
        save(str(tmp_path / "m"), sd, _meta("mlp", kw, "flow", "velocity", (2,), 0))
    save(str(tmp_path / "m"), sd, _meta("mlp", {**kw, "t_scale": 1000.0}, "flow", "velocity", (2,), 0))
    assert load(str(tmp_path / "m")).net.cond.t_scale == 1000.0


def test_save_refuses_a_dtype_weights_cannot_be_stored_in(tmp_path):
    kw = {"dim": 2, "hidden": 8, "depth": 1}
    with pytest.raises(ValueError, match="dtype torch.int8 cannot store checkpoint weights; accepted: torch.float16"):
        save(str(tmp_path / "m"), build_net("mlp", **kw), _meta("mlp", kw, "flow", "velocity", (2,), 0), torch.int8)


def test_a_pair_renamed_by_hand_loads_its_own_weights(digits_copy, tmp_path):
    for p in digits_copy:
        os.rename(p, p.replace("digits.", "ren."))
    model = load(str(tmp_path / "ren.json"))  # its weights field still names digits.safetensors
    assert torch.equal(_outputs(model.net, 64), _outputs(load("digits").net, 64))
    os.remove(tmp_path / "ren.safetensors")
    msg = _refused(str(tmp_path / "ren.json"), str(tmp_path / "digits.safetensors"), "weights file not found",
                   FileNotFoundError)
    assert "'weights' field of " + str(tmp_path / "ren.json") in msg


def test_a_path_with_another_extension_is_not_a_checkpoint(digits_copy, tmp_path):
    from diffsolve.models.checkpoint import locate

    (tmp_path / "x.txt").write_text("{}")
    for p in (str(tmp_path / "x.txt"), str(tmp_path / "absent.txt")):
        with pytest.raises(ValueError, match=re.escape(p) + r": not a checkpoint \(extension '.txt'\); a checkpoint is"):
            locate(p)
    for p in digits_copy:  # a prefix with a dot is a prefix when PREFIX.json exists
        os.rename(p, p.replace("digits.", "digits.v2."))
    assert locate(str(tmp_path / "digits.v2")) == str(tmp_path / "digits.v2.json")


# --- atomic writes: strict JSON, text only, never over a directory ---------------------------

@pytest.mark.parametrize("obj,where", [({"a": float("nan")}, "['a'] is nan"),
                                       ({"a": [1.0, float("-inf")]}, "['a'][1] is -inf"),
                                       ({"a": {"b": object()}}, "['a']['b'] is of type object"),
                                       ({1: "x"}, "key 1 of type int")])
def test_atomic_write_json_refuses_what_json_cannot_hold(tmp_path, obj, where):
    from diffsolve.io import atomic_write_json

    p = str(tmp_path / "a.json")
    with pytest.raises(ValueError, match=re.escape(f"{p}: not written: ") + ".*" + re.escape(where)):
        atomic_write_json(p, obj)
    assert os.listdir(tmp_path) == []


def test_atomic_write_text_refuses_non_text_and_a_directory(tmp_path):
    from diffsolve.io import atomic_write_text

    with pytest.raises(TypeError, match="text must be a str, got int"):
        atomic_write_text(str(tmp_path / "a.txt"), 3)
    with pytest.raises(IsADirectoryError, match=re.escape(str(tmp_path)) + ": is a directory"):
        atomic_write_text(str(tmp_path), "x")
    assert os.listdir(tmp_path) == []


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
