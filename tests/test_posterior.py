"""The exact posterior of a mixture prior under a linear-Gaussian measurement: against brute-force
integration in 2-D, importance weighting in 8-D, the dense formula for every structured operator,
its denoiser's limits, and sampling it with our solvers."""

import math

import pytest
import torch

import diffsolve
from diffsolve.inverse import Denoising, GaussianBlur, Inpainting, LinearOperator, SuperResolution
from diffsolve.metrics.exact import mode_tv, mode_tv_floor, sliced_w2
from diffsolve.models.gmm import GaussianMixture, builtin, grid_mixture
from diffsolve.models.gmm_posterior import MAX_DENSE

F64 = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _random_mixture(shape, K=4, q=2, seed=0, c=0.3):
    g = _gen(seed)
    n = math.prod(shape)
    means = torch.randn(K, n, dtype=F64, generator=g)
    U = torch.linalg.qr(torch.randn(K, n, q, dtype=F64, generator=g))[0]
    d = 0.5 + torch.rand(K, q, dtype=F64, generator=g)
    w = 0.5 + torch.rand(K, dtype=F64, generator=g)
    return GaussianMixture(w, means, torch.full((K,), c, dtype=F64), U, d, shape=shape)


def _brute_force_2d(prior, A, y, sigma_y, h=0.01, lim=2.0):
    """Posterior weights, mean and covariance by grid integration of prior x likelihood."""
    t = torch.arange(-lim, lim + h / 2, h, dtype=F64)
    X = torch.cartesian_prod(t, t)
    like = -((X @ A.T - y) ** 2).sum(1) / (2 * sigma_y**2)
    lp_k = torch.stack([GaussianMixture(torch.ones(1), prior.means[k:k + 1], prior.c[k:k + 1], prior.U[k:k + 1],
                                        prior.d[k:k + 1]).log_prob(X, 0.0) for k in range(prior.K)], 1)
    lj = lp_k + torch.log(prior.weights) + like[:, None]
    mass = torch.logsumexp(lj, 0)
    weights = torch.softmax(mass, 0)
    p = torch.softmax(torch.logsumexp(lj, 1), 0)
    mean = p @ X
    cov = (p[:, None] * (X - mean)).T @ (X - mean)
    return weights, mean, cov


@pytest.mark.parametrize("make_op, y, sigma_y", [
    (lambda: LinearOperator(torch.tensor([[1.0, 0.5]], dtype=F64), (2,)), [0.4], 0.3),
    (lambda: LinearOperator(torch.tensor([[0.8, -0.3], [0.2, 0.9]], dtype=F64), (2,)), [0.5, 0.6], 0.2),
    (lambda: Inpainting(torch.tensor([0, 1])), [-0.7], 0.1),
])
def test_posterior_matches_brute_force_in_2d(make_op, y, sigma_y):
    prior, op = builtin("gmm-2d"), make_op()
    y = torch.tensor(y, dtype=F64)
    post = prior.posterior(op, y, sigma_y)
    w, m, C = _brute_force_2d(prior, op.matrix(), y, sigma_y)
    assert torch.allclose(post.weights, w, rtol=1e-6, atol=1e-12)
    assert torch.allclose(post.mean(), m, rtol=1e-6, atol=1e-9)
    assert torch.allclose(post.covariance(), C, rtol=1e-6, atol=1e-9)
    # the closed-form covariance of each component: (C_k^-1 + A^T A / sigma^2)^-1 [issue 12]
    M = op.matrix()
    for k in range(prior.K):
        Ck = (prior.U[k] * prior.d[k]) @ prior.U[k].T + prior.c[k] * torch.eye(2, dtype=F64)
        ref = torch.linalg.inv(torch.linalg.inv(Ck) + M.T @ M / sigma_y**2)
        assert torch.allclose(post.component_covariances()[k], ref, rtol=1e-9, atol=1e-12)


def test_log_prob_is_the_normalised_posterior_density_in_2d():
    prior = builtin("gmm-2d")
    A = LinearOperator(torch.tensor([[1.0, 0.5]], dtype=F64), (2,))
    post = prior.posterior(A, torch.tensor([0.4]), 0.3)
    x = torch.tensor([[0.3, 0.5], [0.9, -0.2], [-0.2, 0.8]], dtype=F64)
    unnorm = prior.log_prob(x, 0.0) - ((x @ A.M.T - 0.4) ** 2).sum(1) / (2 * 0.09)
    h = 0.01
    t = torch.arange(-2.0, 2.0 + h / 2, h, dtype=F64)
    X = torch.cartesian_prod(t, t)
    log_Z = torch.logsumexp(prior.log_prob(X, 0.0) - ((X @ A.M.T - 0.4) ** 2).sum(1) / 0.18, 0) + 2 * math.log(h)
    assert torch.allclose(post.log_prob(x), unnorm - log_Z, atol=1e-7)


def test_posterior_matches_importance_weighting_in_8d():
    prior = _random_mixture((8,), seed=1)
    A = LinearOperator(torch.randn(3, 8, dtype=F64, generator=_gen(2)), (8,))
    x_true = prior.sample(1, generator=_gen(3))
    sigma_y = 0.8
    y = A.measure(x_true, sigma_y, seeds=[5])
    post = prior.posterior(A, y, sigma_y)
    N = 400_000
    x, k = prior.sample(N, generator=_gen(4), return_labels=True)
    logw = -((A(x) - y) ** 2).sum(1) / (2 * sigma_y**2)
    w = torch.softmax(logw, 0)
    ess = float(1 / (w**2).sum())
    assert ess > 5000
    # self-normalised IS: standard error of E[f] is about std_w(f) / sqrt(ESS); a 5-SE bound
    mean_is = w @ x
    se = ((w @ (x - mean_is) ** 2) / ess).sqrt()
    assert bool(((post.mean() - mean_is).abs() < 5 * se).all())
    onehot = torch.nn.functional.one_hot(k, prior.K).to(F64)
    w_is = w @ onehot
    se_w = ((w @ (onehot - w_is) ** 2) / ess).sqrt()
    assert bool(((post.weights - w_is).abs() < 5 * se_w + 1e-4).all())
    var_is = w @ (x - mean_is) ** 2
    assert torch.allclose(post.covariance().diagonal(), var_is, rtol=0.05)


OPERATORS = {
    "denoising": lambda: Denoising((1, 4, 6)),
    "inpainting": lambda: Inpainting(torch.rand(1, 4, 6, generator=_gen(7)) < 0.5),
    "super-resolution": lambda: SuperResolution(2, (1, 4, 6)),
    "blur": lambda: GaussianBlur(1.0, 3, (1, 4, 6)),
}


@pytest.mark.parametrize("name", list(OPERATORS))
@pytest.mark.parametrize("sigma_y", [0.3, 0.0])
def test_structured_operators_agree_with_the_dense_formula(name, sigma_y):
    """The spectral (structured) computation equals the same operator as a dense matrix."""
    op = OPERATORS[name]()
    prior = _random_mixture((1, 4, 6), K=3, q=3, seed=8, c=0.2)
    x = prior.sample(1, generator=_gen(9))
    y = op.measure(x, sigma_y, seeds=[1])
    fast = prior.posterior(op, y, sigma_y)
    dense = prior.posterior(LinearOperator(op.matrix(), op.in_shape), y.reshape(1, -1), sigma_y)
    assert torch.allclose(fast.weights, dense.weights, rtol=1e-8, atol=1e-12)
    assert torch.allclose(fast.means, dense.means, atol=1e-9)
    assert torch.allclose(fast.component_covariances(), dense.component_covariances(), atol=1e-9)
    z = prior.sample(5, generator=_gen(10))
    for s in (0.05, 1.0):
        assert torch.allclose(fast(z, s), dense(z, s), atol=1e-8)
    if sigma_y > 0:  # the issue's formula, directly: C' = (C^-1 + A^T A / sigma^2)^-1
        M, k = op.matrix(), 1
        Ck = (prior.U[k] * prior.d[k]) @ prior.U[k].T + prior.c[k] * torch.eye(24, dtype=F64)
        Cp = torch.linalg.inv(torch.linalg.inv(Ck) + M.T @ M / sigma_y**2)
        mp = Cp @ (torch.linalg.solve(Ck, prior.means[k]) + M.T @ y.reshape(-1) / sigma_y**2)
        assert torch.allclose(fast.component_covariances()[k], Cp, atol=1e-9)
        assert torch.allclose(fast.means[k], mp, atol=1e-9)


def test_noiseless_posterior_lies_on_the_affine_set_and_is_the_limit_of_small_noise():
    prior = _random_mixture((1, 4, 6), K=3, q=2, seed=11)
    op = SuperResolution(2, (1, 4, 6))
    y = op(prior.sample(1, generator=_gen(12)))
    exact, near = prior.posterior(op, y, 0.0), prior.posterior(op, y, 1e-6)
    samples = exact.sample(50, generator=_gen(13))
    assert torch.allclose(op(samples), y.expand(50, -1, -1, -1), atol=1e-12)
    assert torch.allclose(exact.weights, near.weights, atol=1e-8)
    assert torch.allclose(exact.means, near.means, atol=1e-8)
    assert bool(torch.isfinite(exact.log_prob(samples)).all())
    assert torch.allclose(exact(samples, 0.3), near(samples, 0.3), atol=1e-8)


def test_denoiser_limits_identity_at_small_s_and_the_mean_at_large_s():
    prior = _random_mixture((8,), seed=14)
    A = LinearOperator(torch.randn(2, 8, dtype=F64, generator=_gen(15)), (8,))
    post = prior.posterior(A, torch.tensor([0.5, -1.0]), 0.5)
    x = torch.randn(6, 8, dtype=F64, generator=_gen(16)) * 2
    assert torch.allclose(post(x, 1e-7), x, atol=1e-10)
    assert torch.equal(post(x, 0.0), x)
    assert torch.allclose(post(x, 1e5), post.mean().expand(6, -1), atol=1e-7)
    # per-row levels give what one level per call gives
    s = torch.tensor([0.1, 0.1, 1.0, 1.0, 3.0, 0.0], dtype=F64)
    rows = torch.cat([post(x[i:i + 1], float(s[i])) for i in range(6)])
    assert torch.allclose(post(x, s), rows, atol=1e-12)


def test_a_huge_measurement_noise_gives_back_the_prior():
    prior = builtin("gmm-64")
    A = LinearOperator(torch.randn(5, 64, dtype=F64, generator=_gen(17)), (64,))
    post = prior.posterior(A, torch.zeros(5, dtype=F64), 1e9)
    x = prior.sample(4, generator=_gen(18))
    assert torch.allclose(post.weights, prior.weights, atol=1e-12)
    assert torch.allclose(post(x, 0.2), prior(x, 0.2), atol=1e-10)
    assert torch.allclose(post.log_prob(x, 0.5), prior.log_prob(x, 0.5), atol=1e-8)


def test_weights_are_computed_in_log_space():
    """A far-off measurement drives every N(y; A mu_k, ...) below the smallest double: the
    weights stay finite and pick the nearest component."""
    prior = grid_mixture(8)
    A = LinearOperator(torch.eye(8, dtype=F64)[:2], (8,))
    post = prior.posterior(A, torch.tensor([1000.0, 1000.0]), 0.1)
    assert bool(torch.isfinite(post.weights).all())
    assert int(post.weights.argmax()) == 24 and float(post.weights[24]) == pytest.approx(1.0)


@pytest.mark.parametrize("solver, nfe", [("dpm++2m", 50), ("heun", 59)])
def test_sampling_the_posterior_denoiser_matches_exact_samples(solver, nfe):
    """The oracle: our ODE solvers on the exact posterior denoiser. Observing one coordinate of
    MCGdiff's grid mixture leaves the other grid index ambiguous: a multimodal posterior. The
    start y = s_max * noise drops the posterior's mean (about 7 here): at s_max = 200 that costs
    2.8x the floor, whatever the NFE; s_max = 2000 makes it negligible."""
    prior = grid_mixture(8, weights="chi2", seed=1)
    post = prior.posterior(Inpainting(torch.eye(8)[0]), torch.tensor([4.0]), 1.0)
    assert int((post.weights > 0.02).sum()) >= 5
    n = 4000
    a, b = post.sample(n, generator=_gen(21)), post.sample(n, generator=_gen(22))
    floor = sliced_w2(a, b)
    noise = torch.randn(n, 8, dtype=F64, generator=_gen(23))
    res = diffsolve.sample(post, noise, solver=solver, nfe=nfe, s_max=2000.0)
    assert res.samples.shape == (n, 8) and res.nfe == nfe
    assert sliced_w2(res.samples, a) < 1.5 * floor
    assert sliced_w2(prior.sample(n, generator=_gen(24)), a) > 5 * floor     # the test can fail
    assert mode_tv(post, res.samples) < 3 * mode_tv_floor(post.weights, n)


def test_grid_mixture_is_mcgdiffs_prior():
    g = grid_mixture(80)
    assert g.K == 25 and g.shape == (80,)
    assert torch.allclose(g.weights, torch.full((25,), 0.04, dtype=F64))
    assert torch.equal(g.means[0, :4], torch.tensor([-16.0, -16.0, -16.0, -16.0], dtype=F64))
    assert torch.equal(g.means[1, :4], torch.tensor([-16.0, -8.0, -16.0, -8.0], dtype=F64))
    assert torch.allclose(g.covariance().diagonal(), 1 + 0.04 * ((8 * torch.arange(-2, 3, dtype=F64)) ** 2).sum() * 5)
    assert grid_mixture(3).means[24].tolist() == [16.0, 16.0, 16.0]
    w = grid_mixture(8, weights="chi2", seed=3).weights
    assert float(w.std()) > 0 and abs(float(w.sum()) - 1) < 1e-12
    with pytest.raises(ValueError, match="dim"):
        grid_mixture(1)
    with pytest.raises(ValueError, match="weights"):
        grid_mixture(8, weights="random")


def test_the_3072_d_builtin_is_tractable_with_structured_operators():
    prior = builtin("gmm-3072")
    mask = torch.zeros(3, 32, 32)
    mask[:, :, :16] = 1
    for op in (Inpainting(mask), SuperResolution(4, (3, 32, 32)), GaussianBlur(2.0, 9, (3, 32, 32))):
        x = prior.sample(1, generator=_gen(24))
        y = op.measure(x, 0.05, seeds=[0])
        post = prior.posterior(op, y, 0.05)
        xs = post.sample(8, generator=_gen(25))
        assert xs.shape == (8, 3, 32, 32)
        r = (op(xs) - y).flatten(1)
        assert float(r.pow(2).mean().sqrt()) < 0.2               # consistent with y at the noise scale
        assert bool(torch.isfinite(post(xs, 0.5)).all())
        assert int(post.weights.argmax()) == int(prior.assign(x)[0])
    with pytest.raises(ValueError, match="dense covariances"):
        post.covariance()


@pytest.mark.parametrize("call, match", [
    (lambda p, A: p.posterior(A, torch.zeros(2, 1), 0.1), "one measurement"),
    (lambda p, A: p.posterior(A, torch.zeros(1), -0.1), "sigma_y"),
    (lambda p, A: p.posterior(Denoising((3,)), torch.zeros(3), 0.1), "acts on"),
    (lambda p, A: p.posterior(A, torch.tensor([float("nan")]), 0.1), "NaN"),
])
def test_bad_inputs_are_refused(call, match):
    prior = builtin("gmm-2d")
    A = LinearOperator(torch.tensor([[1.0, 0.0]], dtype=F64), (2,))
    with pytest.raises(ValueError, match=match):
        call(prior, A)


def test_operators_without_an_svd_fall_back_to_the_dense_matrix_up_to_a_size():
    class NoSVD(Denoising):
        def svd(self):
            return None

    prior = builtin("gmm-2d")
    a = prior.posterior(NoSVD((2,)), torch.tensor([0.2, 0.3]), 0.2)
    b = prior.posterior(Denoising((2,)), torch.tensor([0.2, 0.3]), 0.2)
    assert torch.allclose(a.weights, b.weights) and torch.allclose(a.mean(), b.mean())
    big = GaussianMixture(torch.ones(1), torch.zeros(1, MAX_DENSE + 1), torch.tensor(1.0))
    with pytest.raises(ValueError, match="has no SVD"):
        big.posterior(NoSVD((MAX_DENSE + 1,)), torch.zeros(MAX_DENSE + 1), 0.1)


def test_score_is_the_gradient_of_the_noised_log_density():
    prior = _random_mixture((4,), seed=30)
    post = prior.posterior(LinearOperator(torch.randn(2, 4, dtype=F64, generator=_gen(31)), (4,)),
                           torch.tensor([0.3, -0.2]), 0.4)
    x = torch.randn(3, 4, dtype=F64, generator=_gen(32)).requires_grad_(True)
    g, = torch.autograd.grad(post.log_prob(x, 0.7).sum(), x)
    assert torch.allclose(post.score(x.detach(), 0.7), g, atol=1e-10)
