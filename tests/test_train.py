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
    with pytest.raises(ValueError, match="labels must be in 0..10"):
        model(y, s, labels=torch.tensor([11, 0]))


def test_cli_train_runs_a_preset(tmp_path, capsys):
    from diffsolve.cli import main

    rc = main(["train", "--preset", "moons", "--steps", "3", "--batch-size", "8", "--out", str(tmp_path), "--quiet"])
    assert rc == 0
    assert "trained moons: 3 steps" in capsys.readouterr().out
    import diffsolve

    assert diffsolve.load(str(tmp_path)).shape == (2,)
