"""The steering verifier: the second MNIST classifier (diffsolve.models.verifier), its training
(diffsolve.train.verifier) and its command (diffsolve train-verifier)."""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from diffsolve.cli import main
from diffsolve.data import mnist
from diffsolve.metrics.features import MnistNet, feature_net
from diffsolve.models.verifier import classifier_reward, load_verifier, verifier_meta
from diffsolve.nets.verifier import ResidualVerifier
from diffsolve.rewards import ClassifierReward
from diffsolve.train.verifier import VerifierConfig, train_verifier

MNIST_PRIOR = types.SimpleNamespace(shape=(1, 28, 28))  # what classifier_reward reads of a prior


@pytest.fixture(scope="module")
def test_images():
    x, y = mnist("test")
    return x[:1000], y[:1000]


def test_shipped_verifier_is_accurate(test_images):
    x, y = test_images
    net = load_verifier()
    with torch.no_grad():
        acc = float((net(x).argmax(1) == y).double().mean())
    # measured: 0.9930 on the first 1000 test images (0.9950 on all 10,000; see mnist-verifier.json)
    assert acc >= 0.98, acc
    meta = verifier_meta()
    assert meta["test_accuracy"] >= 0.99 and meta["test_accuracy_first_1000"] == pytest.approx(acc)
    for key in ("arch_kwargs", "seed", "steps", "training_seconds", "torch"):
        assert key in meta


def test_verifier_is_not_the_metric_network():
    net, metric = load_verifier(), feature_net()
    assert isinstance(net, ResidualVerifier) and not isinstance(net, MnistNet)
    kinds = {type(m) for m in net.modules()}
    assert nn.GroupNorm in kinds and nn.SiLU in kinds  # smooth, normalised
    assert not kinds & {nn.MaxPool2d, nn.ReLU}         # the metric network's pooling and ReLUs
    assert set(net.state_dict()) != set(metric.state_dict())
    assert verifier_meta()["seed"] != 0                # the metric network's seed
    assert net.training is False and all(p.dtype == torch.float32 and not p.requires_grad for p in net.parameters())
    assert load_verifier() is not net                  # a new module each call


def test_input_gradient_is_finite_and_nonzero(test_images):
    x, y = test_images
    reward = classifier_reward(MNIST_PRIOR, 7)
    x0 = x[:8].clone()
    g = reward.grad(x0)
    assert g.shape == x0.shape and bool(torch.isfinite(g).all())
    assert bool((g.flatten(1).norm(dim=1) > 0).all())
    # and slightly noisy images too (what guidance feeds it)
    g = reward.grad(x0 + 0.2 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)))
    assert bool(torch.isfinite(g).all()) and bool((g.flatten(1).norm(dim=1) > 0).all())


def test_reward_is_log_p_of_the_label(test_images):
    x, y = test_images
    reward = classifier_reward(MNIST_PRIOR, 3, smoothing=None)
    assert isinstance(reward, ClassifierReward) and reward.name == "class:3"
    r = reward(x[:5])
    assert r.shape == (5,) and bool((r <= 0).all())
    threes = x[y == 3][:5]
    assert bool((reward(threes) > -0.1).all())  # log p(3 | a 3) near 0


def test_default_reward_is_the_smoothed_verifier(test_images):
    """class:N is the Gaussian smoothing (sigma 0.3, 8 fixed draws) of the raw reward: equal to
    log mean_j p(3 | clamp(x) + 0.3 eps_j) computed by hand, still near 0 on real 3s."""
    from diffsolve.rewards import Smoothed

    x, y = test_images
    smooth, raw = classifier_reward(MNIST_PRIOR, 3), classifier_reward(MNIST_PRIOR, 3, smoothing=None)
    assert isinstance(smooth, Smoothed) and smooth.name == "class:3"
    threes = x[y == 3][:4].float()
    eps = smooth._noise(threes)
    by_hand = torch.stack([raw(threes + 0.3 * e) for e in eps], 1).logsumexp(1) - torch.log(torch.tensor(8.0))
    assert torch.allclose(smooth(threes), by_hand, atol=1e-5)
    assert bool((smooth(threes) > -0.5).all())


def test_classifier_reward_refuses_other_priors_and_bad_labels():
    for shape in [(1, 8, 8), (2,), (3, 28, 28)]:
        with pytest.raises(ValueError, match=r"MNIST priors only.*ClassifierReward\(your_net, label\)"):
            classifier_reward(types.SimpleNamespace(shape=shape), 1)
    with pytest.raises(ValueError, match="MNIST priors only"):
        classifier_reward(object(), 1)
    for label in (-1, 10, 2.5, True, "3"):
        with pytest.raises(ValueError, match=r"0\.\.9"):
            classifier_reward(MNIST_PRIOR, label)
    with pytest.raises(ValueError, match="accepted: mnist"):
        load_verifier("cifar")


def test_training_resumes_exactly(tmp_path):
    kw = dict(steps=4, batch_size=8, warmup=2, arch_kwargs={"stem": 4, "widths": [8], "groups": 4})
    whole = train_verifier(VerifierConfig(**kw), str(tmp_path / "whole"), progress=False, eval_n=10)
    split = train_verifier(VerifierConfig(**kw), str(tmp_path / "split"), progress=False, max_seconds=0.0)
    assert split["step"] == 0 and split["accuracy"] is None
    resumed = train_verifier(VerifierConfig(**kw), str(tmp_path / "split"), progress=False, eval_n=10)
    assert resumed["step"] == whole["step"] == 4
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "whole" / "verifier.safetensors"))
    b = load_file(str(tmp_path / "split" / "verifier.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="another configuration.*seed"):
        train_verifier(VerifierConfig(**kw, seed=2), str(tmp_path / "split"), progress=False)


def test_cli_registers_train_verifier(capsys):
    assert main(["train-verifier"]) == 2  # --out is required
    assert "--out" in capsys.readouterr().err
    assert main(["train-verifier", "--out", "x", "--steps", "0"]) == 2
