"""DPS, PiGDM, DiffPIR, DAPS and RED-diff against the exact posterior of the 2-D mixture.

The exact posterior is brute force: the prior's density times the likelihood on a 641x641 grid
over [-1.6, 1.6]^2 (the mixture's mass outside is < 1e-20).  These methods are approximate:
each test states the bias measured on the fixed problem below (A = [1, 0.5], the measurement of
the mode at (0, 1) with sigma_y = 0.05, 400 samples, nfe = 20) and bounds it with a margin, so
that a change that makes a method worse fails.  Measured with the defaults (posterior-mean
error |.|_2 / mode-weight TV; the exact posterior puts 0.774 on mode 2 and 0.226 on mode 7):

    nfe    dps          pigdm        diffpir      daps         red-diff
    20     0.60 / 0.59  0.65 / 0.53  0.52 / 0.42  0.61 / 0.41  0.49 / 1.0
    100    0.52 / 0.42  0.66 / 0.46  0.57 / 0.40  0.57 / 0.34  0.48 / 1.0

Every method puts 20-35% of its samples at modes 0 and 1, which the measurement excludes
(their residual is 5-10 sigma_y): the x0-hat approximations see the likelihood too broadly at
the levels where the mode is chosen.  RED-diff returns a point estimate (all samples near A^+ y).
"""

from __future__ import annotations

import math

import pytest
import torch

import diffsolve
from diffsolve.inverse import LinearOperator, Operator, solve_inverse
from diffsolve.inverse.methods.diffpir import data_prox
from diffsolve.inverse.methods.guidance import family, largest_singular_value
from diffsolve.solvers.base import NFEError

F64 = torch.float64
METHODS = ("dps", "pigdm", "diffpir", "daps", "red-diff")
#: (posterior-mean error, mode TV) bounds: the measured bias (module docstring) + margin
BIAS = {"dps": (0.75, 0.8), "pigdm": (0.7, 0.65), "diffpir": (0.7, 0.6), "daps": (0.7, 0.6), "red-diff": (0.65, 1.0)}
#: light options where the defaults cost CPU time without changing what is tested
FAST = {"daps": {"langevin_steps": 20}}


@pytest.fixture(scope="module")
def gmm():
    return diffsolve.exact_model("gmm-2d")


@pytest.fixture(scope="module")
def problem(gmm):
    A = LinearOperator(torch.tensor([[1.0, 0.5]], dtype=F64), (2,))
    y = A.measure(gmm.means[2:3].clone(), 0.05, [123])
    return A, y


def brute_force(gmm, A, y, sigma_y, n=641, lim=1.6):
    """Posterior mean and component weights on a grid."""
    t = torch.linspace(-lim, lim, n, dtype=F64)
    X = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    r = y.reshape(1, -1) - A.forward(X)
    w = torch.softmax(gmm.log_prob(X, 0.0) - (r * r).sum(1) / (2 * sigma_y**2), 0)
    modes = torch.zeros(gmm.K, dtype=F64).index_add_(0, gmm.assign(X), w)
    return (w[:, None] * X).sum(0), modes


def bias(gmm, A, y, sigma_y, samples):
    mean, modes = brute_force(gmm, A, y, sigma_y)
    freq = torch.bincount(gmm.assign(samples), minlength=gmm.K).to(F64) / samples.shape[0]
    return float((samples.mean(0) - mean).norm()), float(0.5 * (freq - modes).abs().sum())


class Counted(diffsolve.DenoiserWrapper):
    """Counts forward calls at the prior, whoever makes them."""

    def __init__(self, inner):
        super().__init__(inner)
        self.calls = 0

    def denoise(self, y, s, **cond):
        self.calls += 1
        return self.inner(y, s, **cond)


def test_brute_force_matches_importance_sampling(gmm, problem):
    A, y = problem
    mean, modes = brute_force(gmm, A, y, 0.05)
    x = gmm.sample(400_000, torch.Generator().manual_seed(0))
    w = torch.softmax(-((A.forward(x) - y) ** 2).sum(1) / (2 * 0.05**2), 0)
    assert float(((w[:, None] * x).sum(0) - mean).norm()) < 0.01
    assert float(modes[2]) == pytest.approx(0.774, abs=0.005)


@pytest.mark.parametrize("name", METHODS)
def test_bias_on_gmm_2d_is_bounded(gmm, problem, name):
    A, y = problem
    prior = Counted(gmm)
    res = solve_inverse(prior, A, y, sigma_y=0.05, method=name, nfe=20, num=400, **FAST.get(name, {}))
    # nfe is the truth: forward calls at the prior plus VJPs
    assert res.nfe == 20 == prior.calls + res.info["vjp"]
    assert res.info["vjp"] == (10 if name in ("dps", "pigdm") else 0)
    err, tv = bias(gmm, A, y, 0.05, res.samples)
    assert err < BIAS[name][0] and tv <= BIAS[name][1], (name, err, tv)
    assert bool(torch.isfinite(res.samples).all())


def test_dps_ignores_sigma_y(gmm, problem):
    """DPS's step zeta' / |r| replaces 1/sigma_y^2 [DPS Alg. 1]: a large sigma_y does not bring
    back the prior (the other methods' test below), the samples do not depend on sigma_y at all."""
    A, y = problem
    a = solve_inverse(gmm, A, y, sigma_y=0.05, method="dps", nfe=10, num=4)
    b = solve_inverse(gmm, A, y, sigma_y=100.0, method="dps", nfe=10, num=4)
    assert torch.equal(a.samples, b.samples)


@pytest.mark.parametrize("name", ("pigdm", "diffpir", "daps"))
def test_large_sigma_y_gives_the_prior(gmm, problem, name):
    A, _ = problem
    y = torch.tensor([[0.3]], dtype=F64)
    res = solve_inverse(gmm, A, y, sigma_y=100.0, method=name, nfe=40, num=400, **FAST.get(name, {}))
    freq = torch.bincount(gmm.assign(res.samples), minlength=gmm.K).to(F64) / 400
    # prior weights within the spread of 400 draws (TV floor ~0.05) plus the sampler's own error
    assert float(0.5 * (freq - gmm.weights).abs().sum()) < 0.15, name
    assert float(res.samples.mean(0).norm()) < 0.2


def test_pigdm_is_exact_for_a_gaussian_prior():
    """With N(0, I) data PiGDM's r_t^2 = s^2/(1+s^2) is the true posterior variance: the guided
    score is exact and only the solver's discretisation remains."""
    g = diffsolve.GaussianMixture(torch.ones(1), torch.zeros(1, 2, dtype=F64), torch.ones(1, dtype=F64))
    A = LinearOperator(torch.tensor([[1.0, 0.5]], dtype=F64), (2,))
    y, sy = torch.tensor([[0.8]], dtype=F64), 0.3
    M = A.M
    gain = M.T @ torch.linalg.inv(M @ M.T + sy**2)
    mean, cov = (gain @ y.T).T[0], torch.eye(2, dtype=F64) - gain @ M
    res = solve_inverse(g, A, y, sigma_y=sy, method="pigdm", nfe=200, num=2000)
    assert float((res.samples.mean(0) - mean).norm()) < 0.05
    assert float((torch.cov(res.samples.T) - cov).abs().max()) < 0.1


@pytest.mark.parametrize("name", METHODS)
def test_seeds_reproduce_and_are_batch_independent(gmm, problem, name):
    A, y = problem
    opts = FAST.get(name, {})
    a = solve_inverse(gmm, A, y, sigma_y=0.05, method=name, nfe=10, seeds=[5, 6, 7], **opts)
    b = solve_inverse(gmm, A, y, sigma_y=0.05, method=name, nfe=10, seeds=[6], **opts)
    c = solve_inverse(gmm, A, y, sigma_y=0.05, method=name, nfe=10, seeds=[5, 6, 7], **opts)
    assert torch.equal(a.samples, c.samples)
    assert torch.allclose(a.samples[1:2], b.samples, rtol=0, atol=1e-12)


class ForwardOnly(Operator):
    """A minimal operator with forward/adjoint and no SVD."""

    name = "forward-only"

    def __init__(self, M):
        self.M, self.in_shape, self.out_shape = M, (M.shape[1],), (M.shape[0],)

    def _forward(self, x):
        return x @ self.M.T

    def _adjoint(self, y):
        return y @ self.M


def test_svd_is_required_by_pigdm_only(gmm, problem):
    _, y = problem
    op = ForwardOnly(torch.tensor([[1.0, 0.5]], dtype=F64))
    with pytest.raises(ValueError, match="pigdm.*SVD"):
        solve_inverse(gmm, op, y, sigma_y=0.05, method="pigdm", nfe=10, num=2)
    for name in ("dps", "diffpir", "daps", "red-diff"):
        res = solve_inverse(gmm, op, y, sigma_y=0.05, method=name, nfe=10, num=2, **FAST.get(name, {}))
        assert res.nfe == 10


def test_cg_prox_matches_the_closed_form(problem):
    A, y = problem
    op = ForwardOnly(A.M)
    x0 = torch.tensor([[0.3, -0.2], [1.0, 1.0]], dtype=F64)
    for rho in (0.0, 0.1, 10.0):
        exact = data_prox(A, A.svd(), y.expand(2, 1), x0, rho)
        cg = data_prox(op, None, y.expand(2, 1), x0, rho, cg_iters=5)
        assert torch.allclose(exact, cg, atol=1e-10)
    assert largest_singular_value(op) == pytest.approx(math.sqrt(1.25), rel=1e-6)


@pytest.mark.parametrize("name,nfe,opts,near", [("dps", 21, {}, "20 or 22"), ("pigdm", 7, {}, "6 or 8"),
                                                ("daps", 9, {"ode_nfe": 2}, "8 or 10"),
                                                ("daps", 151, {}, "150 or 152")])  # default: 2 per level at 100-999
def test_budgets_a_method_cannot_spend_are_refused(gmm, problem, name, nfe, opts, near):
    A, y = problem
    with pytest.raises(NFEError, match=near):
        solve_inverse(gmm, A, y, sigma_y=0.05, method=name, nfe=nfe, num=2, **opts)


def test_solver_refusals_are_translated_to_the_outer_budget(gmm, problem):
    A, y = problem
    with pytest.raises(NFEError, match="multiply its budgets by 2"):
        solve_inverse(gmm, A, y, sigma_y=0.05, method="dps", nfe=4, num=2, solver="heun")  # heun: 3 or 5 calls


@pytest.mark.parametrize("name,bad", [("dps", {"zeta": -1}), ("pigdm", {"scale": float("nan")}),
                                      ("diffpir", {"zeta": 1.5}), ("daps", {"lr": 2.0}),
                                      ("red-diff", {"betas": (0.9, 1.0)}), ("dps", {"clip": (1, -1)}),
                                      ("diffpir", {"clip": 3})])
def test_bad_options_are_named(name, bad):
    key = next(iter(bad))
    with pytest.raises(ValueError, match=key):
        diffsolve.inverse.get_method(name, **bad)


@pytest.mark.parametrize("name", METHODS)
def test_clip_is_explicit(gmm, problem, name):
    A, y = problem
    opts = dict(FAST.get(name, {}), clip=(-0.1, 0.1))
    res = solve_inverse(gmm, A, y, sigma_y=0.05, method=name, nfe=10, num=8, **opts)
    if name != "daps":  # daps clips x0-hat; its Langevin and re-noising act after
        assert float(res.samples.abs().max()) <= 0.1 + 1e-12


def test_methods_are_listed_with_cost_and_needs():
    listed = {m["name"]: m for m in diffsolve.inverse.methods()}
    for name in METHODS:
        assert listed[name]["cost"] and listed[name]["paper"]
    assert "svd" in listed["pigdm"]["needs"] and "vjp" in listed["dps"]["needs"]


def test_family_defaults(gmm, problem):
    from diffsolve.inverse.operators import Inpainting

    assert family(problem[0]) == "default" and family(Inpainting(torch.tensor([1, 0]))) == "inpainting"
    mask = Inpainting(torch.tensor([1, 0]))
    res = solve_inverse(gmm, mask, torch.tensor([[0.0]], dtype=F64), sigma_y=0.05, method="diffpir", nfe=6, num=2)
    assert res.info["zeta"] == 1.0                       # [DiffPIR]: inpainting re-noises with fresh noise only
    res = solve_inverse(gmm, problem[0], problem[1], sigma_y=0.05, method="diffpir", nfe=6, num=2, zeta=0.5)
    assert res.info["zeta"] == 0.5


def test_gmm_64_runs_with_every_method():
    g = diffsolve.exact_model("gmm-64")
    M = torch.randn(8, 64, dtype=F64, generator=torch.Generator().manual_seed(1)) / 8
    A = LinearOperator(M, (64,))
    x = g.sample(1, torch.Generator().manual_seed(2))
    y = A.measure(x, 0.05, [0])
    for name in METHODS:
        res = solve_inverse(g, A, y, sigma_y=0.05, method=name, nfe=10, num=16, **FAST.get(name, {}))
        assert bool(torch.isfinite(res.samples).all()) and res.nfe == 10
        # the measurement is fitted better than by prior samples
        r = (A.forward(res.samples) - y).norm(dim=1).mean()
        r0 = (A.forward(g.sample(16, torch.Generator().manual_seed(3))) - y).norm(dim=1).mean()
        assert float(r) < float(r0), name


def test_dps_guidance_matches_algorithm_1_on_its_own_chain():
    """(G1) in dps.py: through an ancestral step a score term g moves y by (s^2 - s'^2) g; on the
    paper's 1000-step linear-beta chain that must equal Alg. 1's correction zeta_i grad_{x_i}
    mapped to y, i.e. 1 / (alpha_i alpha_{i-1}) per unit of zeta_i grad_y (guards the factor)."""
    from diffsolve.inverse.methods.dps import N_REF, beta_of_s

    b = torch.linspace(1e-4, 0.02, 1000, dtype=F64)
    abar = torch.cumprod(1 - b, 0)
    s = ((1 - abar) / abar).sqrt()
    for i in (100, 300, 500, 700, 900, 999):
        ours = (s[i] ** 2 - s[i - 1] ** 2) * N_REF / beta_of_s(float(s[i]))
        alg1 = 1 / (abar[i] * abar[i - 1]).sqrt()
        assert float(ours / alg1) == pytest.approx(1.0, abs=0.01), i


def test_ddrm_grid_is_linear_from_s_max_by_default():
    """DDRM's default grid: nfe + 1 levels evenly spaced in s from s_max (2.0) to 0, one call per
    step (the measured reason is in DDRM's docstring); the Karras grid stays available."""
    from diffsolve.inverse.methods import get_method

    m = get_method("ddrm")
    assert (m.eta, m.eta_b, m.schedule, m.s_max) == (0.85, 1.0, "linear", 2.0)
    g = diffsolve.exact_model("gmm-2d")
    assert m.grid(4, g).tolist() == [2.0, 1.5, 1.0, 0.5, 0.0]
    assert get_method("ddrm", s_max=8.0).grid(2, g).tolist() == [8.0, 4.0, 0.0]
    k = get_method("ddrm", schedule="karras").grid(4, g)
    assert k.numel() == 5 and float(k[0]) > 2.0 and float(k[-1]) == 0.0
    with pytest.raises(ValueError, match="s_max"):
        get_method("ddrm", s_max=0.0)
    A = LinearOperator(torch.tensor([[1.0, 0.0]], dtype=F64), (2,))
    res = solve_inverse(g, A, torch.tensor([[0.7]], dtype=F64), 0.05, method="ddrm", nfe=7, num=3)
    assert res.nfe == 7 and res.info["schedule"] == "linear"


def test_default_method_resolves_per_operator_family(gmm, problem):
    """solve_inverse's default is "auto": one row of DEFAULT_METHODS per operator family (the
    measurements that chose each are in diffsolve/inverse/methods/auto.py); an explicit method
    is run as named; options given with "auto" reach the method it resolves to."""
    from diffsolve.inverse import DEFAULT_METHOD, Denoising, GaussianBlur, Inpainting, SuperResolution
    from diffsolve.inverse.methods.auto import DEFAULT_METHODS, resolve_default

    assert DEFAULT_METHOD == "auto" and set(DEFAULT_METHODS) == {"inpainting", "super-resolution", "deblurring",
                                                                 "denoising", "default"}
    ops = {"inpainting": Inpainting(torch.tensor([1, 0])), "super-resolution": SuperResolution(2, (1, 4, 4)),
           "deblurring": GaussianBlur(1.0, 3, (1, 4, 4)), "denoising": Denoising((2,)), "default": problem[0]}
    for fam, op in ops.items():
        got = resolve_default(op)
        assert got == (fam, *DEFAULT_METHODS[fam]), (fam, got)
    assert resolve_default(ForwardOnly(torch.tensor([[1.0, 0.5]], dtype=F64)))[:2] == ("default", "dps")
    # the table's rule, reported; the same samples as the resolved method with the table's options
    A, y = problem
    res = solve_inverse(gmm, A, y, sigma_y=0.05, nfe=10, num=3)
    name, opts = DEFAULT_METHODS["default"]
    ref = solve_inverse(gmm, A, y, sigma_y=0.05, method=name, nfe=10, num=3, **opts)
    assert res.info["method"] == name and res.info["auto"] == f"default -> {name}"
    assert torch.equal(res.samples, ref.samples) and res.nfe == ref.nfe == 10
    mask = ops["inpainting"]
    ym = torch.tensor([[0.3]], dtype=F64)
    name, opts = DEFAULT_METHODS["inpainting"]
    res = solve_inverse(gmm, mask, ym, sigma_y=0.05, nfe=10, num=3)
    ref = solve_inverse(gmm, mask, ym, sigma_y=0.05, method=name, nfe=10, num=3, **opts)
    assert res.info["auto"] == f"inpainting -> {name}" and res.info["method_options"] == opts
    assert torch.equal(res.samples, ref.samples)
    # explicit choices are unchanged: method="dps" is DPS at its own defaults
    plain = solve_inverse(gmm, mask, ym, sigma_y=0.05, method="dps", nfe=10, num=3)
    assert plain.info["method"] == "dps" and "auto" not in plain.info
    # options given with "auto" go to the resolved method (solver_options merged key by key)
    res = solve_inverse(gmm, mask, ym, sigma_y=0.05, nfe=10, num=3, solver_options={"s_max": 10.0})
    assert res.info["method_options"]["solver_options"] == {**opts.get("solver_options", {}), "s_max": 10.0}
