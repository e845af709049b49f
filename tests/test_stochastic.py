"""Stochastic samplers (diffsolve/solvers/stochastic.py, sde_dpmpp.py).

* Large-NFE samples of the exact 2-D mixture match it: mean within 4 standard errors, covariance
  entries within 5 standard errors (from the mixture's exact fourth moments), mode weights within
  a chi-square-derived total-variation bound, the spread around the assigned mode (radial and
  tangential mean squares, the most sensitive statistic here) within 5 standard errors measured
  on a large exact sample, and an energy distance to an exact reference set within a multiple of
  the floor measured between exact sets of the same size.  The bounds are checked to pass exact
  samples and to reject a sampler with mis-scaled noise.
* Closed forms: the ddpm step is the DDPM posterior step on a DDPM table; ddim-eta and the
  SDE-DPM-Solver++ variants agree step for step with diffusers' schedulers fed the same noise;
  the SDE-DPM-Solver++(3M) "taylor" step integrates a quadratic-in-lambda denoiser exactly.
* Per-sample noise: batch independence, reproducibility, seed dependence; identities between
  samplers; NFE honoured exactly.
"""

from __future__ import annotations

import math
from functools import lru_cache

import pytest
import torch

import diffsolve
from diffsolve.models.gmm import builtin
from diffsolve.paths import get_path
from diffsolve.solvers import NFEError, NoiseSource, get_solver
from diffsolve.solvers.stochastic import ancestral_levels

F64 = torch.float64

# (solver, options, nfe) run against the exact mixture; budgets large enough that the
# discretisation bias is below the statistical resolution of N_SAMPLES samples (measured: the
# radial spread of ddpm is 4.6 standard errors low at nfe=100, 2.7 at 200).  euler-a (eta=1) is
# ddpm bitwise and the 3M variants differ by one coefficient (both checked exactly below), so
# they are not sampled again here: the noise draws dominate the cost.
STAT_CASES = {
    "ddpm": ("ddpm", {}, 200),
    "ddim-eta-0.5": ("ddim-eta", {"eta": 0.5}, 200),
    "euler-maruyama": ("euler-maruyama", {}, 250),
    "edm-churn": ("edm-churn", {}, 201),
    "sde-dpm++2m": ("sde-dpm++2m", {}, 100),
    "sde-dpm++3m": ("sde-dpm++3m", {}, 100),
}
N_SAMPLES = 1000
FLOOR_PAIRS = 8
ALL = [(name, opts) for name, opts, _ in STAT_CASES.values()] + [
    ("euler-a", {"eta": 0.7, "s_noise": 1.0}), ("sde-dpm++3m", {"variant": "taylor"})]


# ----------------------------------------------------------------------------------------------
# exact statistics of gmm-2d
# ----------------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def exact_stats():
    g = builtin("gmm-2d")
    mu, cov = g.mean(), g.covariance()
    # E[(x-mu)_i^2 (x-mu)_j^2] per component (Isserlis), a = m_k - mu, C = C_k:
    # a_i^2 a_j^2 + a_i^2 C_jj + a_j^2 C_ii + 4 a_i a_j C_ij + C_ii C_jj + 2 C_ij^2
    m4 = torch.zeros(2, 2, dtype=F64)
    for k in range(g.K):
        a = g.means[k] - mu
        C = (g.U[k] * g.d[k]) @ g.U[k].T + g.c[k] * torch.eye(2, dtype=F64)
        dC, a2 = torch.diag(C), a * a
        m4 += g.weights[k] * (torch.outer(a2, a2) + torch.outer(a2, dC) + torch.outer(dC, a2)
                              + 4 * torch.outer(a, a) * C + torch.outer(dC, dC) + 2 * C * C)
    cov_var = m4 - cov * cov  # n * Var(sample covariance entry), to O(1/n)
    big = local_spread(g, g.sample(200_000, torch.Generator().manual_seed(999)))
    from scipy.stats import chi2

    # TV = 1/2 sum|p_k - w_k| <= 1/2 sqrt(X^2 / n) (Cauchy-Schwarz), X^2 ~ chi2(K - 1)
    x2 = float(chi2.ppf(1 - 1e-4, g.K - 1))
    gen = torch.Generator().manual_seed(12345)
    ref = g.sample(N_SAMPLES, gen)
    floor = torch.tensor([energy_distance(g.sample(N_SAMPLES, gen), ref) for _ in range(FLOOR_PAIRS)])
    return dict(g=g, mu=mu, cov=cov, cov_var=cov_var, x2=x2, ref=ref, floor_rms=float(floor.pow(2).mean().sqrt()),
                spread_mean=big.mean(0), spread_sd=big.std(0))


def local_spread(g, x: torch.Tensor) -> torch.Tensor:
    """Per sample: squared radial and tangential offsets from the mean of its assigned mode
    (gmm-2d's modes sit on the unit circle, elongated along the tangent)."""
    k = g.assign(x)
    v, m = x - g.means[k], g.means[k]
    tangent = torch.stack([-m[:, 1], m[:, 0]], 1)
    return torch.stack([(v * m).sum(1) ** 2, (v * tangent).sum(1) ** 2], 1)


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased (U-statistic) energy distance 2E|X-Y| - E|X-X'| - E|Y-Y'| (mean 0 if x ~ y)."""
    n, m = len(x), len(y)
    return float(2 * torch.cdist(x, y).mean() - torch.cdist(x, x).sum() / (n * (n - 1))
                 - torch.cdist(y, y).sum() / (m * (m - 1)))


def discrepancies(x: torch.Tensor) -> dict[str, float]:
    """Each statistic divided by its bound: all entries < 1 for a sample of the mixture."""
    st = exact_stats()
    g, n = st["g"], len(x)
    mean_z = ((x.mean(0) - st["mu"]) / (torch.diag(st["cov"]) / n).sqrt()).abs().max()
    cov_z = ((torch.cov(x.T) - st["cov"]) / (st["cov_var"] / n).sqrt()).abs().max()
    p = torch.bincount(g.assign(x), minlength=g.K).to(F64) / n
    tv = 0.5 * (p - g.weights).abs().sum()
    spread_z = ((local_spread(g, x).mean(0) - st["spread_mean"]) / (st["spread_sd"] / math.sqrt(n))).abs().max()
    return {"mean": float(mean_z) / 4, "cov": float(cov_z) / 5, "modes": float(tv) / (0.5 * math.sqrt(st["x2"] / n)),
            "spread": float(spread_z) / 5, "energy": energy_distance(x, st["ref"]) / (6 * st["floor_rms"])}


@lru_cache(maxsize=None)
def start_noise(n: int = N_SAMPLES, seed: int = 7) -> torch.Tensor:
    return torch.randn(n, 2, dtype=F64, generator=torch.Generator().manual_seed(seed))


def run(solver, opts, nfe, noise=None, seeds=None, **kw):
    g = builtin("gmm-2d")
    noise = start_noise() if noise is None else noise
    seeds = list(range(1000, 1000 + len(noise))) if seeds is None else seeds
    return diffsolve.sample(g, noise, solver=solver, nfe=nfe, seeds=seeds, **opts, **kw)


# ----------------------------------------------------------------------------------------------
# statistics against the exact mixture
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", list(STAT_CASES))
def test_samples_match_exact_mixture(case):
    torch.set_num_threads(1)
    solver, opts, nfe = STAT_CASES[case]
    res = run(solver, opts, nfe)
    assert res.nfe == nfe
    d = discrepancies(res.samples)
    assert max(d.values()) < 1, f"{case} at nfe={nfe}: statistic / bound = {d}"


def test_bounds_pass_exact_samples_and_reject_wrong_noise():
    st = exact_stats()
    for seed in range(3):  # exact samples (independent of the reference set) pass every bound
        d = discrepancies(st["g"].sample(N_SAMPLES, torch.Generator().manual_seed(100 + seed)))
        assert max(d.values()) < 1, d
    # the bounds have power: ancestral noise at half its level (ddpm itself passes at this nfe)
    d = discrepancies(run("euler-a", {"s_noise": 0.5}, STAT_CASES["ddpm"][2]).samples)
    assert d["spread"] > 2, d


# ----------------------------------------------------------------------------------------------
# closed forms and step-for-step agreement
# ----------------------------------------------------------------------------------------------
def test_ddpm_step_is_the_ddpm_posterior_on_a_table():
    """Ho et al. eq. 6-7: x_{t'} = mu~(x_t, x0) + sqrt(beta~) z with beta = 1 - abar_t/abar_t'."""
    g, path = builtin("gmm-2d"), get_path("ddpm-linear")
    t, t_prev = torch.tensor(600.0, dtype=F64), torch.tensor(540.0, dtype=F64)
    ab, ab_prev = path.alpha(t) ** 2, path.alpha(t_prev) ** 2
    s, s_prev = path.s(t), path.s(t_prev)
    y = 1.3 * start_noise(8) * s
    src = NoiseSource(list(range(8)))
    solver = get_solver("ddpm")
    state = solver.step(solver.init(y, torch.stack([s, s_prev]), src), g)
    x_t, x0, z = ab.sqrt() * y, g(y, s.expand(8)), src.normal(step=0, like=y, draw=0)
    beta = 1 - ab / ab_prev
    mean = ab_prev.sqrt() * beta / (1 - ab) * x0 + (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab) * x_t
    var = (1 - ab_prev) / (1 - ab) * beta
    torch.testing.assert_close(ab_prev.sqrt() * state.y, mean + var.sqrt() * z, rtol=0, atol=1e-12)


def test_ancestral_levels_closed_form():
    s, sn = torch.tensor(3.0, dtype=F64), torch.tensor(0.4, dtype=F64)
    for eta in (0.0, 0.3, 1.0, 1.7, 5.0):
        down, up = ancestral_levels(s, sn, eta)
        ref_up = min(float(sn), eta * math.sqrt(float(sn) ** 2 * (float(s) ** 2 - float(sn) ** 2) / float(s) ** 2))
        assert float(up) == pytest.approx(ref_up, rel=1e-14, abs=1e-15)
        assert float(down) == pytest.approx(math.sqrt(max(float(sn) ** 2 - ref_up ** 2, 0.0)), rel=1e-13, abs=1e-15)
    assert float(ancestral_levels(s, sn, 1.0)[0]) == pytest.approx(float(sn) ** 2 / float(s), rel=1e-15)


def _diffusers_loop(scheduler, sigmas, y0, seeds, step_kw=None):
    """Run a diffusers scheduler on the exact x0-prediction network, fed diffsolve's noise."""
    g = builtin("gmm-2d")
    src = NoiseSource(seeds)
    a0 = 1 / torch.sqrt(1 + sigmas[0] ** 2)
    x = a0 * y0
    for i, t in enumerate(scheduler.timesteps):
        s = sigmas[i]
        a = 1 / torch.sqrt(1 + s**2)
        x0 = g(x / a, s.expand(len(x)))
        z = src.normal(step=i, like=x, draw=0)
        x = scheduler.step(x0, t, x, variance_noise=z, **(step_kw or {})).prev_sample.to(F64)
    return x


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # inside diffusers
@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_ddim_eta_matches_diffusers_ddim(eta):
    diffusers = pytest.importorskip("diffusers")
    sch = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type="sample",
                                  clip_sample=False, set_alpha_to_one=True, timestep_spacing="leading")
    sch.set_timesteps(12)
    abar = sch.alphas_cumprod.to(F64)[sch.timesteps.long()]
    sigmas = torch.cat([torch.sqrt((1 - abar) / abar), torch.zeros(1, dtype=F64)])
    seeds = list(range(50, 58))
    y0 = start_noise(8) * sigmas[0]
    ours = run("ddim-eta", {"eta": eta}, None, noise=start_noise(8), seeds=seeds, schedule=sigmas).samples
    theirs = _diffusers_loop(sch, sigmas, y0, seeds, {"eta": eta})
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # inside diffusers
@pytest.mark.parametrize("order,variant,steps", [(2, "reference", 10), (2, "reference", 20),
                                                 (3, "diffusers", 10), (3, "diffusers", 20)])
def test_sde_dpmpp_matches_diffusers(order, variant, steps):
    diffusers = pytest.importorskip("diffusers")
    sch = diffusers.DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="linear",
                                                algorithm_type="sde-dpmsolver++", solver_order=order,
                                                prediction_type="sample", solver_type="midpoint",
                                                lower_order_final=True, final_sigmas_type="zero")
    sch.set_timesteps(steps)
    sigmas = sch.sigmas.to(F64)
    seeds = list(range(70, 78))
    y0 = start_noise(8) * sigmas[0]
    opts = {} if order == 2 else {"variant": variant}
    ours = run(f"sde-dpm++{order}m", opts, None, noise=start_noise(8), seeds=seeds, schedule=sigmas).samples
    theirs = _diffusers_loop(sch, sigmas, y0, seeds)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-5)
    if order == 3:  # the default differs from diffusers' third-order steps (see sde_dpmpp.py)
        ref = run("sde-dpm++3m", {}, None, noise=start_noise(8), seeds=seeds, schedule=sigmas).samples
        assert (ref - theirs).abs().max() > 1e-3


def test_sde_dpmpp3m_third_order_term_on_a_quadratic_denoiser():
    """A denoiser D = p(lambda) quadratic in lambda = -log s: the drift integral of (S1) is known,
    so y_3 minus the step's noise term is exact for "taylor", off by phi_3(2h) D2 for "reference"
    and by phi_3(2h) D2 - D2 for "diffusers"."""
    from scipy.integrate import quad

    coef = (0.3, -0.45, 0.2)

    def p(lam):
        return coef[0] + coef[1] * lam + coef[2] * lam * lam

    def den(y, s):  # s: the step's level, a 0-dim tensor
        return torch.full_like(y, p(-math.log(float(s))))

    sig = torch.tensor([4.0, 2.5, 1.1, 0.6, 0.25], dtype=F64)
    lam = -torch.log(sig)
    y0 = start_noise(4) * sig[0]
    src = NoiseSource([1, 2, 3, 4])
    h, h0, h1 = [float(lam[k + 1] - lam[k]) for k in (2, 1, 0)]
    r0, r1 = h0 / h, h1 / h
    m0, m1, m2 = (p(float(lam[k])) for k in (2, 1, 0))
    d1_0, d1_1 = (m0 - m1) / r0, (m1 - m2) / r1
    d2 = (d1_0 - d1_1) / (r0 + r1)
    H = 2 * h
    phi_3 = (math.expm1(-H) / H + 1) / H - 0.5
    for variant, offset in (("taylor", 0.0), ("reference", phi_3 * d2), ("diffusers", phi_3 * d2 - d2)):
        solver = get_solver("sde-dpm++3m", lower_order_final=False, variant=variant)
        st = solver.step(solver.step(solver.init(y0, sig, src), den), den)  # warm-up: orders 1, 2
        y2 = st.y
        st = solver.step(st, den)  # third order
        drift = quad(lambda u: 2 * math.exp(-2 * (h - u)) * p(float(lam[2]) + u), 0, h, epsabs=1e-14, epsrel=1e-14)[0]
        noise = sig[3] * math.sqrt(-math.expm1(-2 * h)) * src.normal(step=2, like=y0, draw=0)
        exact = math.exp(-2 * h) * y2 + drift + noise
        torch.testing.assert_close(st.y, exact + offset, rtol=0, atol=1e-12)
    assert abs(phi_3 * d2) > 1e-3  # the variants differ on this example


def test_ddim_eta_identities():
    noise, seeds = start_noise(16), list(range(16))
    ddim = run("ddim", {}, 15, noise=noise, seeds=seeds).samples
    assert torch.equal(run("ddim-eta", {"eta": 0.0}, 15, noise=noise, seeds=seeds).samples, ddim)
    eta1 = run("ddim-eta", {"eta": 1.0}, 15, noise=noise, seeds=seeds).samples
    assert torch.equal(run("ddpm", {}, 15, noise=noise, seeds=seeds).samples, eta1)
    assert torch.equal(run("euler-a", {"eta": 1.0, "s_noise": 1.0}, 15, noise=noise, seeds=seeds).samples, eta1)
    assert not torch.allclose(eta1, ddim)


def test_edm_churn_levels_follow_algorithm_2():
    res = run("edm-churn", {}, 2 * 10 - 1, noise=start_noise(4), seeds=[1, 2, 3, 4])
    sig, lv = res.sigmas, res.eval_levels
    gamma = min(40.0 / 10, math.sqrt(2) - 1)
    first_evals = lv[0::2]  # each step evaluates at s_hat first, then at s_{i+1} (none after the last)
    for i in range(10):
        churn = 0.05 <= float(sig[i]) <= 50
        assert float(first_evals[i]) == pytest.approx(float(sig[i]) * (1 + gamma if churn else 1), rel=1e-14)
    assert float(sig[0]) > 50 and any(0.05 <= float(v) <= 50 for v in sig[:-1])
    # S_churn = 0: no noise, exactly EDM's deterministic Heun sampler
    heun = run("heun", {}, 19, noise=start_noise(4), seeds=[1, 2, 3, 4]).samples
    assert torch.equal(run("edm-churn", {"S_churn": 0.0}, 19, noise=start_noise(4), seeds=[1, 2, 3, 4]).samples, heun)


# ----------------------------------------------------------------------------------------------
# per-sample noise, NFE, options
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("solver,opts", ALL + [("euler-maruyama", {"denoise_final": False})])
def test_batch_independence_and_reproducibility(solver, opts):
    nfe = 13 if solver == "edm-churn" else 12
    noise, seeds = start_noise(5, seed=3), [11, 22, 33, 44, 55]
    full = run(solver, opts, nfe, noise=noise, seeds=seeds).samples
    for k in (0, 3):
        alone = run(solver, opts, nfe, noise=noise[k:k + 1], seeds=[seeds[k]]).samples
        torch.testing.assert_close(alone, full[k:k + 1], rtol=0, atol=1e-12)
    assert torch.equal(run(solver, opts, nfe, noise=noise, seeds=seeds).samples, full)
    other = run(solver, opts, nfe, noise=noise, seeds=[s + 1 for s in seeds]).samples
    assert (other - full).abs().amax(1).min() > 1e-3  # every sample depends on its own seed


@pytest.mark.parametrize("solver,opts", ALL)
def test_nfe_honoured(solver, opts):
    budgets = (7, 21) if solver == "edm-churn" else (6, 21)
    for nfe in budgets:
        res = run(solver, opts, nfe, noise=start_noise(3), seeds=[1, 2, 3])
        assert res.nfe == nfe and res.eval_levels.numel() == nfe
    res = run(solver, opts, 8, noise=start_noise(3), seeds=[1, 2, 3], final="s_min")
    assert res.nfe == 8 and float(res.sigmas[-1]) > 0
    if solver == "edm-churn":
        with pytest.raises(NFEError, match="nearest budgets it can honour: 19 or 21"):
            run(solver, opts, 20, noise=start_noise(3), seeds=[1, 2, 3])


@pytest.mark.parametrize("solver,opts,needle", [
    ("ddim-eta", {"eta": -0.5}, "-0.5"),
    ("euler-a", {"s_noise": float("nan")}, "nan"),
    ("edm-churn", {"S_tmin": 1.0, "S_tmax": 0.5}, "0.5"),
    ("sde-dpm++3m", {"variant": "exact"}, "accepted: reference, taylor, diffusers"),
    ("euler-maruyama", {"denoise_final": "yes"}, "'yes'"),
])
def test_bad_options_are_named(solver, opts, needle):
    with pytest.raises(ValueError, match=needle.replace("+", r"\+").replace(".", r"\.")):
        get_solver(solver, **opts)


def test_stochastic_solvers_need_seeds_or_default_them():
    g = builtin("gmm-2d")
    res = diffsolve.sample(g, start_noise(3), solver="ddpm", nfe=5)  # seeds default to 0..B-1
    again = diffsolve.sample(g, start_noise(3), solver="ddpm", nfe=5, seeds=[0, 1, 2])
    assert torch.equal(res.samples, again.samples)
    with pytest.raises(ValueError, match="2 seeds for a batch of 3"):
        diffsolve.sample(g, start_noise(3), solver="ddpm", nfe=5, seeds=[0, 1])
    for name in ("ddim-eta", "ddpm", "euler-a", "euler-maruyama", "edm-churn", "sde-dpm++2m", "sde-dpm++3m"):
        assert get_solver(name).stochastic
