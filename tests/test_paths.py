"""Properties of every Gaussian path: positivity, monotone log-SNR, exact inverses, derivatives,
VP identity, and the DDPM tables against diffusers' ``alphas_cumprod``."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import diffsolve
from diffsolve.paths import (CosineVPPath, DiscreteVPPath, EDMPath, FlowPath, LinearVPPath, Path, TrigPath,
                             VEPath, ddpm_betas, get_path, rescale_zero_terminal_snr)

F64 = torch.float64
torch.set_num_threads(1)  # tiny tensors: threads only contend on the shared 2-core machine
NAMES = list(diffsolve.PATHS)
VP = [n for n in NAMES if n.startswith(("ddpm-", "vp-")) or n == "trig"]
FAST = settings(max_examples=40, deadline=None)
#: fractions of the trained time range, as a batch
FRACS = st.lists(st.floats(0.0, 1.0), min_size=1, max_size=16)


def _times(p: Path, fracs) -> torch.Tensor:
    u = torch.tensor(fracs, dtype=F64)
    return (p.t_min + u * (p.t_max - p.t_min)).clamp(p.t_min, p.t_max)


def test_every_builtin_path_is_listed_and_named():
    assert set(VP) >= {"ddpm-linear", "vp-linear", "vp-cosine", "trig"}
    for name in NAMES:
        p = get_path(name)
        assert p.name == name and 0 < p.s_min < p.s_max < math.inf, name
        assert get_path(p) is p


@pytest.mark.parametrize("name", NAMES)
@FAST
@given(fracs=FRACS)
def test_alpha_sigma_positive_and_finite_on_trained_range(name, fracs):
    p = get_path(name)
    t = _times(p, fracs)
    a, s = p.alpha(t), p.sigma(t)
    assert bool(torch.isfinite(a).all() and torch.isfinite(s).all())
    assert bool((a > 0).all() and (s > 0).all()), (t, a, s)
    # the canonical level is sigma/alpha and lies in the trained range
    sc = p.s(t)
    assert torch.allclose(sc, s / a, rtol=1e-13, atol=0)
    assert bool((sc >= p.s_min * (1 - 1e-12)).all() and (sc <= p.s_max * (1 + 1e-12)).all())


@pytest.mark.parametrize("name", NAMES)
@FAST
@given(fracs=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=16, unique=True))
def test_lambda_strictly_decreasing(name, fracs):
    p = get_path(name)
    u = torch.tensor(sorted(fracs), dtype=F64)
    u = u[torch.cat([torch.tensor([True]), (u[1:] - u[:-1]) > 1e-9])]  # distinct at float precision
    t = p.t_min + u * (p.t_max - p.t_min)
    lam = p.lam(t)
    assert bool((lam[1:] < lam[:-1]).all()), (t.tolist(), lam.tolist())
    assert torch.allclose(lam, -torch.log(p.s(t)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
@FAST
@given(fracs=FRACS)
def test_round_trip_t_lambda_t(name, fracs):
    p = get_path(name)
    t = _times(p, fracs)
    back = p.t_of_lam(p.lam(t))
    scale = torch.maximum(t.abs(), torch.tensor(1e-3 * (p.t_max - p.t_min), dtype=F64))
    assert bool(((back - t).abs() <= 1e-10 * scale).all()), (t.tolist(), back.tolist())
    # and through s
    assert bool(((p.t_of_s(p.s(t)) - t).abs() <= 1e-10 * scale).all())


@pytest.mark.parametrize("name", NAMES)
@FAST
@given(fracs=FRACS)
def test_round_trip_lambda_t_lambda(name, fracs):
    p = get_path(name)
    lo, hi = -math.log(p.s_max), -math.log(p.s_min)
    lam = lo + torch.tensor(fracs, dtype=F64) * (hi - lo)
    back = p.lam(p.t_of_lam(lam))
    assert bool(((back - lam).abs() <= 1e-10 * lam.abs().clamp(min=1.0)).all()), (lam.tolist(), back.tolist())


def _fd_check(p: Path, t: torch.Tensor, h: float, rtol: float):
    for f, df in ((p.alpha, p.dalpha), (p.sigma, p.dsigma)):
        fd = (f(t + h) - f(t - h)) / (2 * h)
        an = df(t)
        scale = an.abs() + f(t).abs() / max(p.t_max - p.t_min, 1.0)
        assert bool(((fd - an).abs() <= rtol * scale).all()), (f.__name__, t.tolist(), fd.tolist(), an.tolist())


@pytest.mark.parametrize("name", [n for n in NAMES if not n.startswith("ddpm-")])
@FAST
@given(fracs=st.lists(st.floats(0.01, 0.99), min_size=1, max_size=8))
def test_derivatives_match_finite_differences(name, fracs):
    p = get_path(name)
    t = _times(p, fracs)
    # relative step for sigma-valued times (EDM), absolute otherwise
    h = 1e-6 * (p.t_max - p.t_min)
    _fd_check(p, t, h, 1e-6)


@pytest.mark.parametrize("name", [n for n in NAMES if n.startswith("ddpm-")])
@FAST
@given(k=st.integers(0, 997), w=st.floats(0.05, 0.95))
def test_table_derivatives_match_finite_differences_inside_a_segment(name, k, w):
    # log alpha is linear in t between integer timesteps: the derivative exists inside a segment
    p = get_path(name)
    t = torch.tensor([k + w], dtype=F64)
    _fd_check(p, t, 1e-5, 1e-7)


def test_base_class_derivatives_by_autograd():
    class Quad(Path):
        name, t_min, t_max = "quad", 0.1, 1.0

        def alpha(self, t):
            return 1 - 0.5 * t**2

        def sigma(self, t):
            return t + t**3

    p, t = Quad(), torch.tensor([0.2, 0.5, 0.9], dtype=F64)
    assert torch.allclose(p.dalpha(t), -t, rtol=1e-14)
    assert torch.allclose(p.dsigma(t), 1 + 3 * t**2, rtol=1e-14)


@pytest.mark.parametrize("name", VP)
@FAST
@given(fracs=FRACS)
def test_vp_paths_preserve_variance(name, fracs):
    p = get_path(name)
    t = _times(p, fracs)
    assert torch.allclose(p.alpha(t) ** 2 + p.sigma(t) ** 2, torch.ones_like(t), rtol=0, atol=1e-14)


@pytest.mark.parametrize("name", ["ve", "edm"])
def test_alpha_one_paths(name):
    p = get_path(name)
    t = _times(p, [0.0, 0.3, 1.0])
    assert torch.equal(p.alpha(t), torch.ones_like(t)) and torch.allclose(p.s(t), p.sigma(t), rtol=1e-15)


# --------------------------------------------------------------------------------------
# DDPM tables against diffusers
# --------------------------------------------------------------------------------------

#: our beta kind -> diffusers' DDPMScheduler arguments
DIFFUSERS_TABLES = {
    "linear": dict(beta_schedule="linear"),
    "scaled_linear": dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
    "cosine": dict(beta_schedule="squaredcos_cap_v2"),
}


@pytest.mark.parametrize("ztsnr", [False, True], ids=["plain", "zero-terminal-snr"])
@pytest.mark.parametrize("kind", list(DIFFUSERS_TABLES))
def test_discrete_table_matches_diffusers_alphas_cumprod(kind, ztsnr):
    """diffusers keeps its tables in float32; ours is float64. They agree to float32 rounding
    (the cumulative product of 1000 float32 factors), and our interpolation is exact at integers."""
    diffusers = pytest.importorskip("diffusers")
    sch = diffusers.DDPMScheduler(**DIFFUSERS_TABLES[kind], rescale_betas_zero_snr=ztsnr)
    theirs = sch.alphas_cumprod.to(F64)
    p = DiscreteVPPath(kind, zero_terminal_snr=ztsnr)
    ours = p.alphas_cumprod
    assert ours.dtype == F64 and ours.shape == theirs.shape == (1000,)
    assert torch.allclose(ours, theirs, rtol=2e-5, atol=1e-9), float(((ours - theirs) / theirs.clamp(min=1e-12)).abs().max())
    if not ztsnr:
        # betas: identical up to float32 rounding of diffusers' table
        assert torch.allclose(p.betas, sch.betas.to(F64), rtol=1e-6, atol=0)
    else:
        assert float(ours[-1]) == 0.0 == float(theirs[-1])
        assert float(ours[0]) == pytest.approx(float(torch.cumprod(1 - p.betas, 0)[0]), rel=1e-15)
    # the path at integer t is the table itself, exactly (no interpolation error)
    k = torch.arange(0, int(p.t_max) + 1, dtype=F64)
    assert torch.allclose(p.alpha(k) ** 2, ours[: k.numel()], rtol=1e-14, atol=0)
    # and the schedules differ from each other by far more than the tolerance
    assert float((ours - DiscreteVPPath("linear").alphas_cumprod).abs().max()) > 1e-3 or kind == "linear"


def test_zero_terminal_snr_rescale_is_algorithm_1():
    diffusers = pytest.importorskip("diffusers")
    from diffusers.schedulers.scheduling_ddpm import rescale_zero_terminal_snr as theirs_rescale

    betas = ddpm_betas("scaled_linear")
    ours = rescale_zero_terminal_snr(torch.cumprod(1 - betas, 0))
    theirs = torch.cumprod(1 - theirs_rescale(betas.clone()), 0)  # diffusers' function works in float64 too
    assert torch.allclose(ours, theirs, rtol=1e-12, atol=1e-15)
    assert float(ours[-1]) == 0.0 and float(ours[0]) == pytest.approx(float(1 - betas[0]), rel=1e-15)
    del diffusers


def test_zero_terminal_snr_path_range_stops_one_step_short():
    p = get_path("ddpm-scaled-linear-ztsnr")
    assert p.t_max == 998.0 and math.isfinite(p.s_max) and p.s_max > 1000
    assert float(p.alpha(torch.tensor(999.0, dtype=F64))) == 0.0
    t = torch.tensor([0.0, 500.0, 998.0], dtype=F64)
    assert bool(torch.isfinite(p.lam(t)).all())
    assert bool((p.t_of_lam(p.lam(t)) - t).abs().max() < 1e-9)


# --------------------------------------------------------------------------------------
# rejected names and arguments
# --------------------------------------------------------------------------------------


def test_unknown_path_lists_accepted_names():
    with pytest.raises(ValueError) as e:
        get_path("ddpm-linaer")
    msg = str(e.value)
    assert "ddpm-linaer" in msg and all(n in msg for n in NAMES)


def test_unknown_beta_schedule_lists_accepted_kinds():
    with pytest.raises(ValueError) as e:
        ddpm_betas("squaredcos")
    assert "squaredcos" in str(e.value) and all(k in str(e.value) for k in ("linear", "scaled_linear", "cosine"))
    with pytest.raises(ValueError, match="accepted"):
        DiscreteVPPath("quadratic")


@pytest.mark.parametrize("make, what", [
    (lambda: DiscreteVPPath(torch.tensor([0.1])), "length"),
    (lambda: DiscreteVPPath(torch.tensor([[0.1, 0.2]])), "1-D"),
    (lambda: DiscreteVPPath(torch.tensor([0.1, 1.0])), "(0, 1)"),
    (lambda: DiscreteVPPath(torch.tensor([0.0, 0.1])), "(0, 1)"),
    (lambda: FlowPath(t_max=1.0), "t_max"),
    (lambda: FlowPath(t_min=-0.1), "t_min"),
    (lambda: TrigPath(t_max=1.0), "t_max"),
    (lambda: VEPath(sigma_min=50.0, sigma_max=0.01), "sigma_min"),
    (lambda: VEPath(sigma_min=0.0), "sigma_min"),
    (lambda: EDMPath(sigma_min=0.0), "sigma_min"),
    (lambda: EDMPath(sigma_min=80.0, sigma_max=1.0), "sigma_min"),
    (lambda: LinearVPPath(beta_min=-1.0), "beta_min"),
    (lambda: LinearVPPath(t_min=0.0), "t_min"),
    (lambda: CosineVPPath(t_max=1.0), "t_max"),
    (lambda: CosineVPPath(t_min=0.5, t_max=0.4), "t_min"),
])
def test_bad_path_arguments_rejected(make, what):
    with pytest.raises(ValueError) as e:
        make()
    assert what in str(e.value)


def test_check_s_refuses_levels_outside_trained_range():
    p = get_path("ddpm-linear")
    p.check_s(torch.tensor([p.s_max, 1.0, p.s_min, 0.0], dtype=F64))  # 0 is never evaluated: allowed
    for bad in (p.s_max * 1.01, p.s_min * 0.99):
        with pytest.raises(ValueError, match="allow_extrapolation"):
            p.check_s(torch.tensor([bad], dtype=F64))


@pytest.mark.parametrize("name", NAMES)
def test_derivatives_are_finite_over_the_trained_range(name):
    """alpha' and sigma' (used by velocity adapters) are finite at both ends of the trained range:
    zero terminal SNR's last table entry (alpha = 0) sits just past t_max, and the derivative at
    t_max is the one of the segment inside the range."""
    p = get_path(name)
    t = torch.linspace(p.t_min, p.t_max, 257, dtype=torch.float64)
    assert bool(torch.isfinite(p.dalpha(t)).all()) and bool(torch.isfinite(p.dsigma(t)).all())


def test_ztsnr_velocity_samples_match_the_exact_denoiser():
    from diffsolve import from_network

    g = diffsolve.exact_model("gmm-2d")
    p = get_path("ddpm-scaled-linear-ztsnr")
    den = from_network(g.network(p, "velocity"), p, "velocity")
    noise = torch.randn(8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for solver in ("ddim", "dpm++2m", "unipc", "heun"):
        a = diffsolve.sample(den, noise, solver=solver, nfe=11).samples
        b = diffsolve.sample(g, noise, solver=solver, nfe=11, path=p).samples
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-7)
