"""Validation of the metrics: closed forms of the Frechet distance and of the exact-model
distances, the shipped MNIST CNN's accuracy, the train-vs-test floor, monotone response of the
Frechet distance to noise and blur, and broken samplers that must score badly."""

from __future__ import annotations

import math
import os
from functools import lru_cache

import pytest
import torch

import diffsolve
from diffsolve.data import mnist
from diffsolve.metrics import (class_accuracy, compare_to_exact, density_coverage, features, frechet_distance, frechet_floor,
                               frechet_from_stats, image_quality, mmd, mode_tv, mode_tv_floor, precision_recall,
                               reference_stats, rms_error, sliced_w2, trace_sqrt_product)
from diffsolve.metrics.features import WEIGHTS_DIR, WEIGHTS_FILE
from diffsolve.metrics.validation import BROKEN, add_noise, broken_images, gaussian_blur
from diffsolve.models.gmm import GaussianMixture, builtin

N = 2000  # MNIST subset size for the validation tests


@lru_cache(maxsize=None)
def subset(split: str, n: int = N, seed: int = 0):
    x, y = mnist(split)
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx], y[idx]


@lru_cache(maxsize=None)
def feats(split: str, layer: str = "penultimate"):
    return features(subset(split)[0], layer=layer)


@lru_cache(maxsize=None)
def floor_fd() -> float:
    """FD of N real training images to the test statistics: the floor at this n."""
    return frechet_distance(feats("train"))


# ---------------------------------------------------------------- Frechet distance: closed forms
def test_frechet_commuting_closed_form():
    # diagonal covariances commute: Tr(S1 + S2 - 2 sqrt(S1 S2)) = sum (sqrt a - sqrt b)^2
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(20, generator=g, dtype=torch.float64), torch.rand(20, generator=g, dtype=torch.float64)
    a[:5] = 0.0  # singular
    m1, m2 = torch.randn(20, generator=g, dtype=torch.float64), torch.randn(20, generator=g, dtype=torch.float64)
    exact = float((m1 - m2).pow(2).sum() + (a.sqrt() - b.sqrt()).pow(2).sum())
    assert frechet_from_stats(m1, torch.diag(a), m2, torch.diag(b)) == pytest.approx(exact, rel=1e-10, abs=1e-12)


def test_trace_sqrt_matches_scipy_and_is_symmetric():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    g = torch.Generator().manual_seed(1)
    A = torch.randn(30, 12, generator=g, dtype=torch.float64)
    B = torch.randn(30, 30, generator=g, dtype=torch.float64)
    S1, S2 = A @ A.T / 12, B @ B.T / 30  # S1 has rank 12
    ref = float(scipy_linalg.sqrtm((S1 @ S2).numpy()).real.trace())
    assert trace_sqrt_product(S1, S2) == pytest.approx(ref, rel=1e-8)
    assert trace_sqrt_product(S2, S1) == pytest.approx(ref, rel=1e-8)
    assert frechet_from_stats(torch.zeros(30), S2, torch.zeros(30), S2) == pytest.approx(0.0, abs=1e-9)


def test_shipped_files_and_statistics():
    w = os.path.join(WEIGHTS_DIR, WEIGHTS_FILE)
    assert os.path.getsize(w) < 1_000_000
    mu, S, n = reference_stats("mnist-test")
    assert n == 10000 and mu.dtype == S.dtype == torch.float64 and S.shape == (128, 128)
    assert torch.allclose(S, S.T) and float(torch.linalg.eigvalsh(S).min()) > -1e-10
    # the shipped statistics are those of the shipped network on the test set
    # (a network retrained without new statistics would be far off this)
    assert frechet_distance(feats("test")) < frechet_floor(N)
    with pytest.raises(ValueError, match="mnist-test"):
        frechet_distance(feats("test"), reference="cifar")


# ---------------------------------------------------------------- the classifier
def test_classifier_accuracy_on_real_test_images():
    x, y = subset("test")
    assert class_accuracy(x, y) >= 0.99
    # a wrong labelling is caught: shifting every label by one gives almost nothing right
    assert class_accuracy(x, (y + 1) % 10) < 0.02


def test_input_validation():
    with pytest.raises(ValueError, match=r"\(5, 1, 32, 32\)"):
        features(torch.zeros(5, 1, 32, 32))
    bad = torch.zeros(3, 1, 28, 28)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        features(bad)
    with pytest.raises(ValueError, match="labels"):
        class_accuracy(torch.zeros(3, 1, 28, 28), torch.tensor([1, 2]))


# ---------------------------------------------------------------- the floor and its validation
def test_floor_is_small_and_matches_the_shipped_table():
    fd = floor_fd()
    table = frechet_floor(N)
    assert 0 < fd < 1.5 * table and table < 1.5 * fd
    # valid images the network never trained on sit at the same floor
    assert frechet_distance(feats("valid")) < 1.5 * table
    # the floor falls with n (the 1/n bias of the estimate)
    assert frechet_floor(500) > frechet_floor(2000) > frechet_floor(10000) > 0


def test_noise_and_blur_raise_the_distance_monotonically():
    # the same 1000 training images and the same noise draw at every level
    x = subset("train")[0][:1000]
    clean = frechet_distance(x)
    noisy = [frechet_distance(add_noise(x, s, torch.Generator().manual_seed(0))) for s in (0.1, 0.2, 0.4, 0.8)]
    blurred = [frechet_distance(gaussian_blur(x, w)) for w in (0.6, 1.0, 1.5, 2.5)]
    for curve in (noisy, blurred):
        curve = [clean] + curve
        assert all(b > a for a, b in zip(curve, curve[1:])), curve
        assert curve[-1] > 20 * clean, curve


def test_broken_images_score_far_worse():
    x, y = subset("train")
    x, y = x[:1000], y[:1000]
    floor = frechet_floor(1000)
    real = image_quality(x, labels=y)
    assert real["fd_ratio"] < 1.5 and real["density"] > 0.8 and real["coverage"] > 0.8, real
    for name in BROKEN:
        q = image_quality(broken_images(name, x, seed=1), labels=y)
        assert q["fd"] > 30 * floor, (name, q)
        assert q["recall"] < 0.05 and q["coverage"] < 0.05 and q["class_accuracy"] < 0.5, (name, q)
        # a collapsed sampler (one blank image N times) can sit inside one large real k-NN ball:
        # precision is then 1 by definition and only recall/coverage (and FD) expose it
        if name != "blank":
            assert max(q["precision"], q["density"]) < 0.1, (name, q)


# ---------------------------------------------------------------- precision and recall
def test_precision_recall_real_vs_real_and_closed_cases():
    ftr, fte = feats("train", "conv"), feats("test", "conv")
    pr = precision_recall(fte, ftr, k=3)
    assert pr["precision"] > 0.7 and pr["recall"] > 0.7, pr
    # identical sets: every point lies in its own ball
    assert precision_recall(fte[:300], fte[:300], k=3) == {"precision": 1.0, "recall": 1.0}
    # mode dropping: a generator that only makes digits 0-4 keeps precision, loses recall
    y = subset("train")[1]
    half = precision_recall(fte, ftr[y < 5], k=3)
    assert half["precision"] > 0.7 and half["recall"] < 0.65, half
    dc = density_coverage(fte, ftr)
    assert 0.8 < dc["density"] < 1.2 and dc["coverage"] > 0.8, dc
    with pytest.raises(ValueError, match="k must be"):
        precision_recall(fte[:3], ftr[:3], k=3)


# ---------------------------------------------------------------- a real sampler, good and broken
@lru_cache(maxsize=None)
def mnist_gmm(rank: int = 24, per_class: int = 400) -> GaussianMixture:
    """An exact model of MNIST: one Gaussian per digit (mean, top `rank` principal directions,
    isotropic rest), fitted to `per_class` training images of each digit (PCA via the Gram matrix)."""
    x, y = mnist("train")
    means, Us, ds, cs, ws = [], [], [], [], []
    for k in range(10):
        xk = x[y == k][:per_class].reshape(per_class, -1).double()
        mu = xk.mean(0)
        xc = (xk - mu) / math.sqrt(per_class - 1)
        ev, V = torch.linalg.eigh(xc @ xc.T)  # the nonzero spectrum of the covariance xc^T xc
        ev, V = ev.flip(0)[:rank], V.flip(1)[:, :rank]
        U = xc.T @ V / ev.sqrt()
        c = float((xc.pow(2).sum() - ev.sum()) / (xk.shape[1] - rank))
        means.append(mu), Us.append(U), ds.append(ev - c), cs.append(c), ws.append(float((y == k).sum()))
    return GaussianMixture(torch.tensor(ws), torch.stack(means), torch.tensor(cs), torch.stack(Us),
                           torch.stack(ds), shape=(1, 28, 28), name="mnist-gmm")


def test_metric_ranks_a_good_sampler_above_a_broken_one():
    n = 500
    gmm = mnist_gmm()
    noise = torch.randn(n, 1, 28, 28, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact, labels = gmm.sample(n, generator=torch.Generator().manual_seed(0), return_labels=True)
    good = diffsolve.sample(gmm, noise, solver="dpm++2m", nfe=10, path="ddpm-linear").samples
    broken = diffsolve.sample(gmm, noise, solver="ddim", nfe=1, path="ddpm-linear").samples  # one step
    fd = {k: frechet_distance(v.float()) for k, v in (("exact", exact), ("good", good), ("broken", broken))}
    assert fd["good"] < 1.5 * fd["exact"], fd
    assert fd["broken"] > 3 * fd["good"], fd
    # the one-step sampler collapses onto (nearly) one image: recall and coverage see it
    q = image_quality(broken.float())
    assert q["recall"] < 0.05 and q["coverage"] < 0.05, q
    # the mixture's own samples are recognisable digits of their component
    assert class_accuracy(exact.float(), labels) > 0.8


# ---------------------------------------------------------------- exact-model distances
def test_exact_metrics_closed_forms():
    # 1-D: exact W2 between the empirical laws {0, 1} and {0, 1/2, 1} is sqrt(1/12)
    assert sliced_w2(torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [0.5], [1.0]])) == pytest.approx(12**-0.5)
    # Gaussians differing by a shift m in d dimensions: SW2^2 = |m|^2 / d
    g = torch.Generator().manual_seed(0)
    d, m = 8, torch.full((8,), 0.5, dtype=torch.float64)
    a = torch.randn(4000, d, generator=g, dtype=torch.float64)
    b = torch.randn(4000, d, generator=g, dtype=torch.float64) + m
    assert sliced_w2(a, b, n_proj=512) ** 2 == pytest.approx(float(m.pow(2).sum()) / d, rel=0.15)
    # unbiased MMD^2 equals the direct U-statistic
    x, y = torch.randn(7, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    k = lambda u, v: math.exp(-float((u - v).pow(2).sum()) / (2 * 0.8**2))  # noqa: E731
    direct = (sum(k(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / 42
              + sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / 20
              - 2 * sum(k(x[i], y[j]) for i in range(7) for j in range(5)) / 35)
    assert mmd(x, y, bandwidth=0.8) == pytest.approx(direct, rel=1e-12)
    assert rms_error(x, x + 0.25) == pytest.approx(0.25)


def test_mode_tv_floor_is_the_expectation():
    w = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    n, reps = 50, 4000
    counts = torch.stack([torch.bincount(torch.multinomial(w, n, True, generator=g), minlength=3) for _ in range(reps)])
    tv = 0.5 * (counts / n - w).abs().sum(1)
    assert mode_tv_floor(w, n) == pytest.approx(float(tv.mean()), abs=4 * float(tv.std()) / reps**0.5)


@pytest.mark.parametrize("model", ["gmm-2d", "gmm-64"])
def test_exact_floor_is_below_a_wrong_distribution(model):
    gmm = builtin(model)
    n = 1000
    # wrong: the right components with uniform weights and 1.5x wider spread around each mean
    wrong_gmm = GaussianMixture(torch.ones(gmm.K), gmm.means, gmm.c * 2.25, gmm.U, gmm.d * 2.25, shape=gmm.shape)
    ok = compare_to_exact(gmm, gmm.sample(n, generator=torch.Generator().manual_seed(10)))
    bad = compare_to_exact(gmm, wrong_gmm.sample(n, generator=torch.Generator().manual_seed(10)))
    # exact samples sit at the floor (two exact sets); the wrong distribution well above it
    assert ok["sliced_w2"] < 1.5 * ok["sliced_w2_floor"] and ok["mode_tv"] < 2 * ok["mode_tv_floor"], ok
    assert abs(ok["mmd"]) < 1e-3 and abs(ok["mmd_floor"]) < 1e-3, ok
    assert bad["sliced_w2"] > 2 * max(ok["sliced_w2"], ok["sliced_w2_floor"]), (ok, bad)
    assert bad["mmd"] > 10 * max(abs(ok["mmd"]), abs(ok["mmd_floor"])), (ok, bad)
    assert bad["mode_tv"] > 2.5 * max(ok["mode_tv"], ok["mode_tv_floor"]), (ok, bad)
    assert mode_tv(gmm, gmm.means) == pytest.approx(0.5 * float((1 / gmm.K - gmm.weights).abs().sum()))
