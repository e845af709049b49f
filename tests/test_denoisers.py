"""The prediction adapters are exact algebra: every parameterization of the same exact model
gives the same denoiser (1e-12) and the same samples (1e-10) on every path; thresholding and
network precision behave as documented."""

from __future__ import annotations

import math
from functools import lru_cache

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import diffsolve
from diffsolve import PREDICTIONS, Thresholded, from_network, get_path
from diffsolve.denoisers import FunctionDenoiser, NetworkDenoiser, prediction_from_x0, x0_from_prediction
from diffsolve.models.gmm import builtin

F64 = torch.float64
torch.set_num_threads(1)  # tiny tensors: threads only contend on the shared 2-core machine
PATHS = ["ddpm-linear", "vp-linear", "vp-cosine", "ve", "edm", "flow", "trig"]
FAST = settings(max_examples=25, deadline=None)


@lru_cache(maxsize=None)
def gmm():
    return builtin("gmm-64")


def _levels(p, n: int, gen: torch.Generator) -> torch.Tensor:
    """n canonical levels log-uniform over the path's trained range, both ends included."""
    u = torch.rand(n, dtype=F64, generator=gen)
    s = torch.exp(math.log(p.s_min) + u * (math.log(p.s_max) - math.log(p.s_min)))
    s[0], s[-1] = p.s_min, p.s_max
    return s


def _noisy(n: int, s: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    x0 = gmm().sample(n, generator=gen)
    return x0 + s[:, None] * torch.randn(n, 64, dtype=F64, generator=gen)


@pytest.mark.parametrize("path", PATHS)
def test_all_parameterizations_give_the_same_denoiser(path):
    p, gen = get_path(path), torch.Generator().manual_seed(1)
    s = _levels(p, 24, gen)
    y = _noisy(24, s, gen)
    exact = gmm()(y, s)
    for pred in PREDICTIONS:
        D = from_network(gmm().network(p, pred), p, pred)
        assert D.path is p
        err = float((D(y, s) - exact).abs().max())
        assert err < 1e-12, (path, pred, err)


@pytest.mark.parametrize("path", PATHS)
def test_a_float_level_is_the_same_denoiser_as_a_level_per_row(path):
    """Solvers pass one grid level as a Python float (the adapter caches its constants): every
    prediction type gives what the per-row tensor path gives, in float64 and in float32 (to the
    rounding of the cancellation in D at high noise), and the cache serves a second batch size and repeated calls correctly."""
    p, gen = get_path(path), torch.Generator().manual_seed(3)
    for s in (p.s_min, 0.7, p.s_max):
        y = _noisy(5, torch.full((5,), s, dtype=F64), gen)
        for pred in PREDICTIONS:
            D = from_network(gmm().network(p, pred), p, pred)
            for dt, tol in ((F64, 1e-12), (torch.float32, 2e-5)):
                yy = y.to(dt)
                want = D(yy, torch.full((5,), s, dtype=dt))
                for rows in (5, 2, 5):  # second batch size, then the cached first one again
                    got = D(yy[:rows], float(s))
                    assert got.dtype == dt
                    # D = (x - sigma eps) / alpha cancels ~|y| down to |D|: rounding scales with |y|
                    scale = 1 + float(yy.abs().max())
                    assert float((got - want[:rows]).abs().max()) < tol * scale, (path, pred, dt, s)


@lru_cache(maxsize=None)
def _noise():
    return torch.randn(6, 64, dtype=F64, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("path", PATHS)
def test_all_parameterizations_give_the_same_samples(path):
    p = get_path(path)
    ref = diffsolve.sample(gmm(), _noise(), solver="dpm++2m", nfe=8, schedule="karras", path=p).samples
    for pred in PREDICTIONS:
        D = from_network(gmm().network(p, pred), p, pred)
        res = diffsolve.sample(D, _noise(), solver="dpm++2m", nfe=8, schedule="karras")
        assert res.samples.dtype == F64 and torch.equal(res.sigmas, diffsolve.make_schedule("karras", 8, path=p))
        err = float((res.samples - ref).abs().max())
        assert err < 1e-10, (path, pred, err)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("pred", [p for p in PREDICTIONS if p != "edm"])
@FAST
@given(frac=st.floats(0.0, 1.0), seed=st.integers(0, 2**31 - 1))
def test_prediction_conversions_are_inverse(path, pred, frac, seed):
    p, gen = get_path(path), torch.Generator().manual_seed(seed)
    t = torch.full((3,), p.t_min + frac * (p.t_max - p.t_min), dtype=F64)
    x = torch.randn(3, 5, dtype=F64, generator=gen)
    out = torch.randn(3, 5, dtype=F64, generator=gen)
    x0 = x0_from_prediction(pred, out, x, t, p)
    back = prediction_from_x0(pred, x0, x, t, p)
    scale = 1 + out.abs().max() + x.abs().max() * float(p.s(t[0]) + 1 / p.s(t[0]))
    assert float((back - out).abs().max()) <= 1e-12 * float(scale)


def test_eps_and_v_adapters_match_closed_forms_on_a_vp_table():
    # DDPM: x = sqrt(abar) x0 + sqrt(1 - abar) eps; v = sqrt(abar) eps - sqrt(1 - abar) x0
    p = get_path("ddpm-linear")
    t = torch.tensor([0.0, 250.0, 999.0], dtype=F64)
    abar = p.alphas_cumprod[t.long()]
    gen = torch.Generator().manual_seed(3)
    x0, eps = torch.randn(3, 4, dtype=F64, generator=gen), torch.randn(3, 4, dtype=F64, generator=gen)
    a, sg = abar.sqrt()[:, None], (1 - abar).sqrt()[:, None]
    x = a * x0 + sg * eps
    assert torch.allclose(x0_from_prediction("eps", eps, x, t, p), x0, atol=1e-12, rtol=0)
    assert torch.allclose(x0_from_prediction("v", a * eps - sg * x0, x, t, p), x0, atol=1e-12, rtol=0)
    assert torch.allclose(x0_from_prediction("score", -eps / sg, x, t, p), x0, atol=1e-12, rtol=0)


def test_velocity_adapter_on_flow_is_rectified_flow():
    # flow: x = (1 - t) x0 + t eps, u = dx/dt = eps - x0  ->  x0 = x - t u
    p = get_path("flow")
    t = torch.tensor([0.1, 0.5, 0.9], dtype=F64)
    gen = torch.Generator().manual_seed(4)
    x, u = torch.randn(3, 4, dtype=F64, generator=gen), torch.randn(3, 4, dtype=F64, generator=gen)
    assert torch.allclose(x0_from_prediction("velocity", u, x, t, p), x - t[:, None] * u, atol=1e-14, rtol=0)


# --------------------------------------------------------------------------------------
# thresholding
# --------------------------------------------------------------------------------------


def _fixed(x0: torch.Tensor) -> FunctionDenoiser:
    return FunctionDenoiser(lambda y, s: x0)


@FAST
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(0.05, 20.0), m=st.floats(0.1, 3.0),
       q=st.floats(0.5, 1.0), kind=st.sampled_from(Thresholded.KINDS))
def test_thresholded_output_within_bounds_and_monotone(seed, scale, m, q, kind):
    x0 = scale * torch.randn(4, 3, 5, dtype=F64, generator=torch.Generator().manual_seed(seed))
    out = Thresholded(_fixed(x0), kind, percentile=q, max_value=m)(torch.zeros_like(x0), 1.0)
    assert out.shape == x0.shape and out.dtype == x0.dtype
    assert float(out.abs().max()) <= m * (1 + 1e-12)
    # a per-sample non-decreasing map of x0 that keeps signs
    for b in range(4):
        xs, o = x0[b].flatten(), out[b].flatten()
        order = torch.argsort(xs)
        assert bool((o[order][1:] >= o[order][:-1] - 1e-15).all())
        assert bool((torch.sign(o) * torch.sign(xs) >= 0).all())


@FAST
@given(seed=st.integers(0, 2**31 - 1), m=st.floats(0.1, 3.0), kind=st.sampled_from(Thresholded.KINDS),
       q=st.floats(0.5, 1.0))
def test_thresholded_is_identity_inside_the_bounds(seed, m, kind, q):
    x0 = m * (2 * torch.rand(3, 7, dtype=F64, generator=torch.Generator().manual_seed(seed)) - 1)
    out = Thresholded(_fixed(x0), kind, percentile=q, max_value=m)(torch.zeros_like(x0), 0.5)
    assert torch.allclose(out, x0, rtol=1e-15, atol=0)


def test_clip_thresholding_is_clamp():
    x0 = torch.tensor([[-3.0, -0.5, 0.2, 2.0]], dtype=F64)
    out = Thresholded(_fixed(x0), "clip", max_value=1.0)(torch.zeros_like(x0), 1.0)
    assert torch.equal(out, torch.tensor([[-1.0, -0.5, 0.2, 1.0]], dtype=F64))


def test_dynamic_thresholding_rescales_by_the_percentile():
    # percentile 1: r = max(max|x0|, m) and x0 is scaled by m / r without clipping (Imagen)
    x0 = torch.tensor([[-4.0, 1.0, 2.0], [0.5, -0.25, 0.1]], dtype=F64)
    out = Thresholded(_fixed(x0), "dynamic", percentile=1.0, max_value=1.0)(torch.zeros_like(x0), 1.0)
    assert torch.allclose(out, torch.tensor([[-1.0, 0.25, 0.5], [0.5, -0.25, 0.1]], dtype=F64), rtol=1e-15)
    # a lower percentile clips the outlier first
    x0 = torch.tensor([[10.0] + [2.0] * 99], dtype=F64)
    out = Thresholded(_fixed(x0), "dynamic", percentile=0.9, max_value=1.0)(torch.zeros_like(x0), 1.0)
    assert torch.allclose(out, torch.ones_like(x0), rtol=1e-15)


def test_thresholded_keeps_the_path_and_rejects_bad_options():
    p = get_path("ddpm-linear")
    D = from_network(gmm().network(p, "eps"), p, "eps")
    assert Thresholded(D, "clip").path is p
    with pytest.raises(ValueError) as e:
        Thresholded(D, "static")
    assert "static" in str(e.value) and "clip" in str(e.value) and "dynamic" in str(e.value)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="percentile"):
            Thresholded(D, "dynamic", percentile=bad)


# --------------------------------------------------------------------------------------
# precision and names
# --------------------------------------------------------------------------------------


def test_network_runs_in_float32_while_the_state_stays_float64():
    p = get_path("vp-cosine")
    exact = gmm().network(p, "eps")
    seen = []

    def net(x, t):
        seen.append((x.dtype, t.dtype))
        return exact(x.double(), t.double()).to(x.dtype)

    D32 = from_network(net, p, "eps", net_dtype=torch.float32)
    res = diffsolve.sample(D32, _noise(), solver="dpm++2m", nfe=6)
    assert res.samples.dtype == F64 and res.nfe == 6
    assert seen and all(d == (torch.float32, torch.float32) for d in seen)
    ref = diffsolve.sample(from_network(exact, p, "eps"), _noise(), solver="dpm++2m", nfe=6).samples
    err = float((res.samples - ref).abs().max())
    assert 0 < err < 1e-4  # float32 network rounding, not float32 state drift


def test_wrong_prediction_names_rejected():
    p = get_path("edm")
    for bad in ("epsilon", "sample", "v_prediction", ""):
        with pytest.raises(ValueError) as e:
            from_network(gmm().network(p, "x0"), p, bad)
        assert repr(bad) in str(e.value) and all(k in str(e.value) for k in PREDICTIONS)
    x, t = torch.zeros(1, 2, dtype=F64), torch.ones(1, dtype=F64)
    for fn in (x0_from_prediction, prediction_from_x0):
        with pytest.raises(ValueError, match="accepted"):
            fn("epsilon", x, x, t, p)
        with pytest.raises(ValueError, match="NetworkDenoiser"):  # edm is preconditioning, not algebra
            fn("edm", x, x, t, p)
    with pytest.raises(ValueError, match="unknown path"):
        NetworkDenoiser(gmm().network(p, "x0"), "edm2", "x0")
