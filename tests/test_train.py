"""Training: the losses' minimiser is the exact denoiser for every prediction type, a small
network's loss decreases towards the exact one, and a killed run resumes bit for bit."""

from __future__ import annotations

import json

import pytest
import torch

from diffsolve.models.gmm import builtin
from diffsolve.nets import MLP
from diffsolve.train import TrainConfig, diffusion_loss, train
from diffsolve.train.loop import default_t_scale

CASES = [("ddpm-linear", "eps", "uniform"), ("vp-cosine", "x0", "uniform"), ("vp-linear", "v", "uniform"),
         ("flow", "velocity", "uniform"), ("edm", "edm", "lognormal"), ("ve", "score", "uniform")]


def _fixed_loss(net, x, path, pred, dist, weighting="none"):
    with torch.no_grad():
        return float(diffusion_loss(net, x, path, pred, generator=torch.Generator().manual_seed(5), noise_dist=dist,
                                    weighting=weighting))


# (unweighted score matching is left out: its target variance ~ 1/sigma_min^2 swamps the test)
@pytest.mark.parametrize("path,pred,dist,weighting", [c + ("none",) for c in CASES[:5]] + [c + ("min-snr",) for c in CASES])
def test_exact_network_minimises_the_loss(path, pred, dist, weighting):
    # E||f - target||^2 is minimised by f = E[target | x_t]: the exact network of a Gaussian
    # mixture (built with the sampling-time adapters) must beat any shifted copy of itself, by
    # about the squared shift. This ties the training targets to the sampling algebra.
    g = builtin("gmm-2d")
    x = g.sample(8000, generator=torch.Generator().manual_seed(1))
    f = g.network(path, pred)
    base = _fixed_loss(f, x, path, pred, dist, weighting)
    for delta in (0.1, -0.1):
        shifted = _fixed_loss(lambda x_, t_, **k: f(x_, t_) + delta, x, path, pred, dist, weighting)
        assert shifted > base, (path, pred, delta, base, shifted)


@pytest.mark.parametrize("path,pred,dist", CASES[:5])
def test_loss_decreases_towards_the_exact_loss(path, pred, dist):
    torch.manual_seed(0)
    g = builtin("gmm-2d")
    x = g.sample(512, generator=torch.Generator().manual_seed(1)).float()
    net = MLP(dim=2, hidden=48, depth=1, t_scale=default_t_scale(path, pred))
    opt = torch.optim.Adam(net.parameters(), 5e-3)
    before = _fixed_loss(net, x, path, pred, dist)
    exact = _fixed_loss(g.network(path, pred), x.double(), path, pred, dist)
    gen = torch.Generator().manual_seed(0)
    for _ in range(150):
        loss = diffusion_loss(net, x[torch.randint(512, (128,), generator=gen)], path, pred, generator=gen,
                              noise_dist=dist)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = _fixed_loss(net, x, path, pred, dist)
    assert exact < before
    # most of the excess loss over the Bayes-optimal denoiser is gone
    assert after - exact < 0.5 * (before - exact), (before, after, exact)


def _cfg(steps):
    return TrainConfig(data="digits", arch="mlp", arch_kwargs={"hidden": 32, "depth": 1}, path="ddpm-linear",
                       prediction="eps", conditional=True, label_dropout=0.3, batch_size=16, steps=steps,
                       warmup=3, ema_decay=0.9)


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    from safetensors.torch import load_file

    full = train(_cfg(12), str(tmp_path / "a"), progress=False, log_every=4)
    train(_cfg(5), str(tmp_path / "b"), progress=False, log_every=4)        # "killed" after 5 steps
    resumed = train(_cfg(12), str(tmp_path / "b"), progress=False, log_every=4)
    assert full["step"] == resumed["step"] == 12
    sa, sb = (torch.load(tmp_path / d / "state.pt", weights_only=False) for d in "ab")
    for key in ("net", "ema"):
        for k in sa[key]:
            assert torch.equal(sa[key][k], sb[key][k]), (key, k)
    # the exported EMA checkpoint is identical too
    ea, eb = (load_file(str(tmp_path / d / "model.safetensors")) for d in "ab")
    assert all(torch.equal(ea[k], eb[k]) for k in ea)
    # and so is the loss log (seconds aside)
    logs = [[(r["step"], r["loss"]) for r in map(json.loads, (tmp_path / d / "log.jsonl").read_text().splitlines())]
            for d in "ab"]
    assert logs[0] == logs[1] and len(logs[0]) == 3


def test_resume_refuses_another_configuration(tmp_path):
    train(_cfg(2), str(tmp_path), progress=False)
    other = _cfg(4)
    other.lr = 5e-4
    with pytest.raises(ValueError, match="another configuration"):
        train(other, str(tmp_path), progress=False)


def test_label_dropout_trains_the_null_label(tmp_path):
    import diffsolve

    train(_cfg(3), str(tmp_path), progress=False)
    model = diffsolve.load(str(tmp_path))
    assert model.num_classes == 10 and model.null_label == 10
    y = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    s = torch.full((2,), 3.0, dtype=torch.float64)
    unc = model(y, s)                                       # no labels -> the null label
    null = model(y, s, labels=torch.tensor([10, 10]))
    assert torch.equal(unc, null)
    # labels are checked once before sampling (the network itself is graph-clean: no checks)
    with pytest.raises(ValueError, match=r"labels must be in 0\.\.10 \(10 = null label\), got \[11\]"):
        diffsolve.sample(model, y.float(), solver="ddim", nfe=2, cond={"labels": torch.tensor([11, 0])})


def test_cli_train_runs_a_preset(tmp_path, capsys):
    from diffsolve.cli import main

    rc = main(["train", "--preset", "moons", "--steps", "3", "--batch-size", "8", "--out", str(tmp_path), "--quiet"])
    assert rc == 0
    assert "trained moons: 3 steps" in capsys.readouterr().out
    import diffsolve

    assert diffsolve.load(str(tmp_path)).shape == (2,)


# --- refusals ----------------------------------------------------------------------------------

@pytest.mark.parametrize("field,value,match", [
    ("steps", 0, "steps must be an integer >= 1, got 0"),
    ("steps", -3, "steps must be an integer >= 1, got -3"),
    ("steps", 2.5, "steps must be an integer"),
    ("steps", True, "steps must be an integer"),
    ("batch_size", 0, "batch_size must be an integer >= 1"),
    ("lr", 0.0, "lr must be a finite number > 0, got 0.0"),
    ("lr", -1e-3, "lr must be a finite number > 0"),
    ("lr", float("nan"), "lr must be a finite number > 0, got nan"),
    ("lr", float("inf"), "lr must be a finite number > 0"),
    ("ema_decay", 1.0, r"ema_decay must be a finite number in \[0, 1\), got 1.0"),
    ("ema_decay", -0.1, "ema_decay must be"),
    ("label_dropout", 1.5, "label_dropout must be"),
    ("seed", -1, r"seed must be an integer in 0\.\.9223372036854775807"),
    ("betas", (0.9,), "betas must be two numbers"),
    ("data", "mnst", "unknown data 'mnst'; accepted: mnist, digits, moons"),
    ("data_split", "training", "unknown data_split 'training'; accepted: train, valid"),
    ("arch", "resnet", "unknown arch 'resnet'; accepted: unet, mlp"),
    ("path", "flw", "unknown path 'flw'; accepted: .*flow"),
    ("prediction", "epsilon", "unknown prediction 'epsilon'; accepted: .*eps"),
    ("noise_dist", "normal", "unknown noise_dist 'normal'; accepted: uniform, lognormal"),
    ("weighting", "snr", "unknown weighting 'snr'; accepted: none, min-snr"),
])
def test_train_refuses_bad_config_before_any_work(tmp_path, field, value, match):
    cfg = _cfg(3)
    setattr(cfg, field, value)
    with pytest.raises(ValueError, match=match):
        train(cfg, str(tmp_path / "out"), progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kw,match", [({"log_every": 0}, "log_every must be an integer >= 1, got 0"),
                                      ({"ckpt_every": -5}, "ckpt_every must be an integer >= 1"),
                                      ({"ckpt_every_s": float("nan")}, "ckpt_every_s must be a finite number >= 0"),
                                      ({"max_seconds": -1.0}, "max_seconds must be a finite number >= 0")])
def test_train_refuses_bad_loop_arguments(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        train(_cfg(2), str(tmp_path / "out"), progress=False, **kw)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kw,exc,match", [
    ({"export_dtype": torch.int8}, ValueError, "export_dtype torch.int8 cannot store checkpoint weights; accepted: "),
    ({"export_dtype": "float16"}, ValueError, "export_dtype 'float16' cannot store checkpoint weights"),
    ({"resume": "yes"}, TypeError, "resume must be True or False"),
    ({"progress": 1}, TypeError, "progress must be True or False"),
    ({"command": ["diffsolve"]}, TypeError, "command must be a str"),
])
def test_train_checks_every_argument_before_the_first_step(tmp_path, monkeypatch, kw, exc, match):
    import diffsolve.train.loop as loop

    monkeypatch.setattr(loop, "diffusion_loss", lambda *a, **k: pytest.fail("a training step ran"))
    with pytest.raises(exc, match=match):
        train(TrainConfig(steps=2, batch_size=8, warmup=0), str(tmp_path / "out"), **{"progress": False, **kw})
    assert not (tmp_path / "out").exists()


def test_train_refuses_arch_kwargs_and_conditioning_it_cannot_use(tmp_path):
    cfg = _cfg(3)
    cfg.arch_kwargs = {"hidden": 32, "widht": 3}
    with pytest.raises(ValueError, match="arch_kwargs .* do not fit arch 'mlp'.*widht"):
        train(cfg, str(tmp_path), progress=False)
    cfg = TrainConfig(data="moons", conditional=True, steps=2)
    with pytest.raises(ValueError, match="'moons' has no labels.*mnist, digits"):
        train(cfg, str(tmp_path), progress=False)


def test_presets_refuse_unknown_names_fields_and_values():
    from diffsolve.train import preset

    with pytest.raises(ValueError, match="unknown preset 'moon'; accepted: mnist, digits, moons, rings, checker"):
        preset("moon")
    with pytest.raises(ValueError, match="unknown TrainConfig field stpes; accepted: data, .*steps"):
        preset("moons", stpes=3)
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got -3"):
        preset("moons", steps=-3)
    assert preset("moons", steps=7).steps == 7


def test_train_refuses_an_out_dir_that_is_a_file(tmp_path):
    f = tmp_path / "out"
    f.write_text("not a directory")
    with pytest.raises(ValueError, match="out_dir .* is a file; pass a directory"):
        train(_cfg(2), str(f), progress=False)
    assert f.read_text() == "not a directory"


def test_resume_names_the_differences(tmp_path):
    train(_cfg(2), str(tmp_path), progress=False)
    other = _cfg(4)
    other.arch_kwargs = {"hidden": 64, "depth": 1}
    other.prediction = "x0"
    with pytest.raises(ValueError, match="another configuration") as info:
        train(other, str(tmp_path), progress=False)
    msg = str(info.value)
    assert "arch_kwargs: {'hidden': 32, 'depth': 1} -> {'hidden': 64, 'depth': 1}" in msg
    assert "prediction: 'eps' -> 'x0'" in msg and "steps" not in msg.split("(")[1]


def test_resume_refuses_a_damaged_state_file(tmp_path):
    train(_cfg(2), str(tmp_path), progress=False)
    state = tmp_path / "state.pt"
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"state\.pt: not a readable training state"):
        train(_cfg(3), str(tmp_path), progress=False)


# --- orphaned temporary files of a killed write ------------------------------------------------

def test_resume_removes_orphaned_temporary_files_only(tmp_path):
    train(_cfg(2), str(tmp_path), progress=False)
    orphans = [tmp_path / ".tmp-ab12_x9z.pt", tmp_path / ".tmp-0000aaaa.safetensors", tmp_path / ".tmp-zzzzzzzz"]
    for o in orphans:
        o.write_bytes(b"half a checkpoint")
    keep = [tmp_path / ".tmp-notes.txt", tmp_path / "x.tmp-abcdefgh.pt", tmp_path / ".tmp-abcdefghi.pt"]
    for k in keep:
        k.write_text("mine")
    (tmp_path / ".tmp-12345678").mkdir()  # a directory of that name is not ours either
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file() and p not in orphans}
    res = train(_cfg(3), str(tmp_path), progress=False)
    assert res["step"] == 3 and sorted(res["removed_orphans"]) == sorted(str(o) for o in orphans)
    assert not any(o.exists() for o in orphans)
    assert all(k.read_text() == "mine" for k in keep) and (tmp_path / ".tmp-12345678").is_dir()
    assert set(before) <= {p.name for p in tmp_path.iterdir()}
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-") and p not in keep
                and p.is_file()]


def test_remove_orphans_of_a_killed_writer(tmp_path):
    # a process killed (SIGKILL: no cleanup) while atomic_write writes leaves its temporary file
    import os
    import signal
    import subprocess
    import sys
    import time

    from diffsolve.io import remove_orphans

    script = ("import sys, time; from diffsolve.io import atomic_write\n"
              "def w(tmp):\n    open(tmp, 'w').write('partial'); print('writing', flush=True); time.sleep(60)\n"
              "atomic_write(sys.argv[1], w)\n")
    target = tmp_path / "model.safetensors"
    proc = subprocess.Popen([sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    assert len(left) == 1 and left[0].suffix == ".safetensors" and not target.exists()
    # a young file is kept when the caller asks for a minimum age (another live writer)
    assert remove_orphans(str(tmp_path), older_than=3600) == []
    old = time.time() - 7200
    os.utime(left[0], (old, old))
    assert remove_orphans(str(tmp_path), older_than=3600) == [str(left[0])]
    assert list(tmp_path.iterdir()) == []
    assert remove_orphans(str(tmp_path / "absent")) == []
    with pytest.raises(ValueError, match="older_than must be"):
        remove_orphans(str(tmp_path), older_than=-1)
