"""Composable Diffusion and SuperDiff on exact 2-D mixtures: the Ito-tracked log-density against
the closed form, OR's mixture weights, AND's intersection, the Gaussian product of experts, and
Compose with every solver."""

from __future__ import annotations

import math

import pytest
import torch

import diffsolve
from diffsolve.denoisers import Denoiser
from diffsolve.guidance.compose import Compose
from diffsolve.guidance.superdiff import SuperDiff

F = torch.float64


def gm(means, w=None, c=0.2):
    means = torch.tensor(means, dtype=F)
    K = len(means)
    return diffsolve.GaussianMixture(torch.ones(K) if w is None else torch.tensor(w, dtype=F), means,
                                     torch.tensor(c ** 2, dtype=F).expand(K))


def noise(n, seed=0):
    return torch.randn(n, 2, dtype=F, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("solver", ["ddpm", "euler-maruyama", "ddim"])
def test_ito_log_density_tracks_the_exact_one(solver):
    g = diffsolve.exact_model("gmm-2d")
    errs = []
    for nfe in (50, 200):
        sd = SuperDiff([g])
        res = diffsolve.sample(sd, noise(100), solver=solver, nfe=nfe, hooks=[sd.hook], return_trajectory=True,
                               final="s_min")
        exact = g.log_prob(res.trajectory[-1], float(res.sigmas[-1])) - g.log_prob(res.trajectory[0],
                                                                                   float(res.sigmas[0]))
        errs.append(float((sd.log_q[:, 0] - exact).abs().mean()))
    # measured mean |error| at s_min = 0.002 (log q spans ~10 nats): ddpm 2.5 -> 1.0, EM 2.6 -> 1.0,
    # ddim (Hutchinson Laplacian) 0.9 -> 0.3; first order: it shrinks with the steps
    assert errs[1] < 0.7 * errs[0], errs
    assert errs[1] < (0.5 if solver == "ddim" else 1.4), errs


@pytest.mark.parametrize("solver,nfe", [("ddpm", 100), ("euler-maruyama", 200), ("ddim", 50)])
def test_or_samples_the_weighted_mixture_of_the_two_models(solver, nfe):
    a = gm([[-2.0, 1.0], [-2.0, -1.0]])
    b = gm([[2.0, 1.5], [2.0, 0.0], [2.0, -1.5]])
    sd = SuperDiff([a, b], "or", bias=[math.log(0.3), math.log(0.7)])
    x = diffsolve.sample(sd, noise(1000), solver=solver, nfe=nfe, hooks=[sd.hook]).samples
    frac_b = float((x[:, 0] > 0).double().mean())
    # closed form 0.7; binomial sd 0.015; measured 0.741 (ddpm), 0.709 (EM), 0.737 (ddim)
    assert abs(frac_b - 0.7) < 0.06, frac_b
    # mass on the supports: every sample within 5 component sd (0.2) of one of the five means
    both = torch.cat([a.means, b.means])
    assert float(torch.cdist(x, both).min(1).values.max()) < 1.0


def test_and_lands_on_the_intersection_with_equal_densities():
    c1 = gm([[-2.0, 0.0], [0.0, 0.0]])
    c2 = gm([[2.0, 0.0], [0.0, 0.0]])
    sd = SuperDiff([c1, c2], "and")
    x = diffsolve.sample(sd, noise(500), solver="euler-maruyama", nfe=200, hooks=[sd.hook]).samples
    near = float((x.norm(dim=1) < 0.6).double().mean())
    assert near > 0.95, near                                    # measured 0.996; OR gives 0.50
    gap = (c1.log_prob(x, 0.0) - c2.log_prob(x, 0.0)).abs().median()
    assert float(gap) < 0.5, float(gap)                         # the true densities agree too
    assert float((sd.log_q[:, 0] - sd.log_q[:, 1]).abs().max()) < 1e-8


def test_and_refuses_a_deterministic_solver():
    """With ddim the densities stay equal but only 1.1% of samples reached the intersection
    (measured): refused rather than silently wrong."""
    sd = SuperDiff([gm([[-2.0, 0.0], [0.0, 0.0]]), gm([[2.0, 0.0], [0.0, 0.0]])], "and")
    with pytest.raises(ValueError, match="stochastic solver"):
        diffsolve.sample(sd, noise(4), solver="ddim", nfe=10, hooks=[sd.hook])


class GaussLabels(Denoiser):
    """Exact label-conditional model: label k is N(mu_k, C) (one shared covariance), null is N(mu_null, C)."""

    num_classes, null_label, shape = 2, 2, (2,)

    def __init__(self):
        U = torch.tensor([[[0.6, 0.8]]], dtype=F).transpose(1, 2)
        mk = lambda m: diffsolve.GaussianMixture(torch.ones(1), torch.tensor([m], dtype=F), torch.tensor(0.05),
                                                 U, torch.tensor([[0.3]], dtype=F))
        self.parts = [mk([1.0, 0.0]), mk([0.0, 1.5]), mk([0.0, 0.0])]

    def denoise(self, y, s, labels):
        out = torch.empty_like(y)
        for k, p in enumerate(self.parts):
            rows = labels == k
            if rows.any():
                out[rows] = p(y[rows], s[rows])
        return out


@pytest.mark.parametrize("terms,mean", [([(0, 1.0), (1, 1.0)], [1.0, 1.5]),       # AND
                                        ([(0, 1.0), (1, -0.5)], [1.0, -0.75])])    # AND NOT
def test_compose_is_the_gaussian_product_of_experts(terms, mean):
    model = GaussLabels()
    comp = Compose(model, terms)
    x = diffsolve.sample(comp, noise(4000), solver="dpm++2m", nfe=20).samples
    # p0^(1 - sum w) prod p_i^(w_i) with one covariance C is N(sum_i w_i (mu_i - mu0) + mu0, C), and so is
    # every noised level: exact. Statistical bounds: 5 standard errors of 4000 samples
    C = model.parts[0].covariance()
    se = (C.diagonal() / 4000).sqrt()
    assert ((x.mean(0) - torch.tensor(mean, dtype=F)).abs() < 5 * se).all(), x.mean(0)
    assert torch.allclose(torch.cov(x.T), C, atol=0.03), torch.cov(x.T)   # sd of entries ~ 0.01


def test_compose_refuses_bad_terms():
    model = GaussLabels()
    for terms, msg in [([], "non-empty"), ([(5, 1.0)], "label"), ([(2, 1.0)], "null label"),
                       ([(0, 1.0), (0, 2.0)], "twice"), ([(0, 0.0)], "weight is 0"),
                       ([(0, float("nan"))], "weight"), ([(0.5, 1.0)], "label"), ([0], "pair")]:
        with pytest.raises(ValueError, match=msg):
            Compose(model, terms)
    with pytest.raises(ValueError, match="fixes the labels"):
        diffsolve.sample(Compose(model, [(0, 1.0)]), noise(2), nfe=3, cond={"labels": torch.zeros(2).long()})


def _nfe(info):
    if info["name"].startswith("dpm-solver-") and info["name"][-2:] in ("12", "23"):
        return None
    return {"dpm-solver-3": 19, "rk4": 17}.get(info["name"], 19 if "2 per step" in info["nfe"] else 20)


@pytest.mark.parametrize("info", diffsolve.list_solvers(), ids=lambda i: i["name"])
def test_compose_works_with_every_solver(info):
    model = GaussLabels()
    comp = Compose(model, [(0, 1.0), (1, 1.0)])
    nfe = _nfe(info)
    kw = {"rtol": 0.05} if nfe is None else {}
    calls = []
    orig = model.denoise
    model.denoise = lambda y, s, labels: (calls.append(y.shape[0]), orig(y, s, labels))[1]
    res = diffsolve.sample(comp, noise(400), solver=info["name"], nfe=nfe, **kw)
    assert all(r == 3 * 400 for r in calls) and len(calls) == res.nfe     # one batched call per NFE
    err = (res.samples.mean(0) - torch.tensor([1.0, 1.5], dtype=F)).abs().max()
    assert float(err) < 0.15, float(err)      # 5 se of 400 samples ~ 0.14 in the long direction
