"""Agreement with diffusers' schedulers on an exact model, configured the same way.

diffusers' scheduler loop is driven with the exact eps network of ``gmm-64`` on the
``ddpm-linear`` table, called at its integer timesteps; ours samples the adapted network on the
explicit grid ``path.s(timesteps)`` plus the final level diffusers uses (0, or s(t=0) for
``final_sigmas_type="sigma_min"`` / DDIM without ``set_alpha_to_one``), from the same x_T
(``y_start = x_T / alpha(t_0)``).

diffusers stores its tables in float32.  So that both sides use the *same* noise levels, the
scheduler's ``alphas_cumprod`` (and the multistep schedulers' ``sigmas``) are replaced by the
float64 values of our table, which diffusers' arithmetic accepts: DDIM and UniPC then run in
float64 end to end and agree to ~1e-15; DPMSolverMultistep casts its state to float32 inside
``step`` and agrees to ~1e-7.  With the stock float32 tables the differences are ~1e-6 (the
table's rounding), checked too.
"""

from __future__ import annotations

from functools import lru_cache

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

import diffsolve  # noqa: E402
from diffsolve import Thresholded, from_network, get_path  # noqa: E402
from diffsolve.denoisers import FunctionDenoiser  # noqa: E402
from diffsolve.models.gmm import builtin  # noqa: E402
from diffsolve.solvers import SOLVERS  # noqa: E402

F64 = torch.float64
torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

#: tolerances (max abs difference of the final samples, which are O(1))
TOL = 1e-6          # the task's bar; DPMSolverMultistep's float32 state measures ~1e-7
TOL_F64 = 1e-12     # DDIM / UniPC run in float64 end to end with the float64 table
TOL_STOCK = 1e-5    # stock float32 tables: ~1e-6 measured


@lru_cache(maxsize=None)
def setup():
    g, path = builtin("gmm-64"), get_path("ddpm-linear")
    xT = torch.randn(6, 64, dtype=F64, generator=torch.Generator().manual_seed(11))
    return g, path, g.network(path, "eps"), xT


def _needs(name: str):
    return pytest.mark.skipif(name not in SOLVERS, reason=f"solver {name!r} not registered yet")


def _final_level(final_zero: bool) -> float:
    _, path, _, _ = setup()
    return 0.0 if final_zero else float(path.s(torch.tensor(0.0, dtype=F64)))


def _use_float64_table(sch, final_zero: bool) -> None:
    """Give the scheduler our float64 table (call after set_timesteps)."""
    _, path, _, _ = setup()
    ac = path.alphas_cumprod.clone()
    sch.alphas_cumprod = ac
    if hasattr(sch, "final_alpha_cumprod"):  # DDIM
        sch.final_alpha_cumprod = torch.tensor(1.0, dtype=F64) if sch.config.set_alpha_to_one else ac[0]
    if getattr(sch, "sigmas", None) is not None:  # multistep schedulers: levels of the timesteps + final
        a = ac[sch.timesteps]
        sch.sigmas = torch.cat([((1 - a) / a).sqrt(), torch.tensor([_final_level(final_zero)], dtype=F64)])


def run_diffusers(sch, n: int, final_zero: bool, float64_table: bool = True, steps: int | None = None):
    """diffusers' loop with the exact eps network; returns (x, timesteps)."""
    _, _, net, xT = setup()
    sch.set_timesteps(n)
    if float64_table:
        _use_float64_table(sch, final_zero)
    x = xT.clone()
    for t in sch.timesteps[:steps]:
        eps = net(x, torch.full((x.shape[0],), float(t), dtype=F64))
        x = sch.step(eps, t, x).prev_sample
    return x, sch.timesteps.clone()


def run_ours(solver: str, timesteps: torch.Tensor, final_zero: bool, **options):
    """Our sampler on the same levels, from the same x_T; returns x (at the final level)."""
    g, path, net, xT = setup()
    t = timesteps.to(F64)
    final = torch.tensor([_final_level(final_zero)], dtype=F64)
    levels = path.s(t)
    if final_zero or float(t[-1]) > 0:
        levels = torch.cat([levels, final])
    # else DDIM without set_alpha_to_one: its last step, from t = 0 "to alphas_cumprod[0]", is
    # the identity (one wasted evaluation); our grid simply ends at s(0)
    D = from_network(net, path, "eps")
    res = diffsolve.sample(D, xT, solver=solver, nfe=None, schedule=levels, y_start=xT / path.alpha(t[:1]),
                           **options)
    assert res.nfe == levels.numel() - 1 and res.samples.dtype == F64
    a_end = 1.0 if final_zero else path.alpha(torch.tensor(0.0, dtype=F64))
    return res.samples * a_end


def _max_diff(a, b) -> float:
    assert bool(torch.isfinite(a).all() and torch.isfinite(b).all())
    return float((a - b).abs().max())


# --------------------------------------------------------------------------------------
# DDIM
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("set_alpha_to_one", [True, False])
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("n", [10, 25])
def test_ddim(n, spacing, set_alpha_to_one):
    """DDIM (eta = 0, no clipping).  Only spacings whose steps go from one listed timestep to the
    next are comparable: DDIM steps to t - T//n, which for "linspace" (and "trailing" when n does
    not divide T) is not the next timestep it evaluates."""
    sch = diffusers.DDIMScheduler(clip_sample=False, timestep_spacing=spacing, set_alpha_to_one=set_alpha_to_one)
    x, ts = run_diffusers(sch, n, final_zero=set_alpha_to_one)
    assert len(ts) == n and bool(((ts[:-1] - ts[1:]) == 1000 // n).all())
    ours = run_ours("ddim", ts, final_zero=set_alpha_to_one)
    assert _max_diff(x, ours) < TOL_F64


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_ddim_stock_float32_table(spacing):
    sch = diffusers.DDIMScheduler(clip_sample=False, timestep_spacing=spacing)
    x, ts = run_diffusers(sch, 20, final_zero=True, float64_table=False)
    d = _max_diff(x, run_ours("ddim", ts, final_zero=True))
    assert 1e-9 < d < TOL_STOCK  # the table's float32 rounding, and nothing else


# --------------------------------------------------------------------------------------
# DPM-Solver++ multistep
# --------------------------------------------------------------------------------------

DPM = [pytest.param(2, "dpm++2m", {}, marks=_needs("dpm++2m"), id="2m"),
       # diffusers' 3M is the reference code's (second-order) variant; ours defaults to "taylor"
       pytest.param(3, "dpm++3m", {"variant": "reference"}, marks=_needs("dpm++3m"), id="3m")]


@pytest.mark.parametrize("final", ["zero", "sigma_min"])
@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
@pytest.mark.parametrize("n", [5, 20])
@pytest.mark.parametrize("order, name, opts", DPM)
def test_dpm_solver_multistep(order, name, opts, n, spacing, final):
    """algorithm_type="dpmsolver++", solver_type="midpoint", lower_order_final=True (first-order
    last step and at most second-order second-to-last on runs of < 15 steps; any step to 0 is
    first order)."""
    sch = diffusers.DPMSolverMultistepScheduler(solver_order=order, timestep_spacing=spacing,
                                                final_sigmas_type=final)
    x, ts = run_diffusers(sch, n, final_zero=final == "zero")
    ours = run_ours(name, ts, final_zero=final == "zero", **opts)
    assert _max_diff(x, ours) < TOL


@pytest.mark.parametrize("order, name, opts", DPM)
def test_dpm_solver_multistep_stock_float32_table(order, name, opts):
    sch = diffusers.DPMSolverMultistepScheduler(solver_order=order)
    x, ts = run_diffusers(sch, 20, final_zero=True, float64_table=False)
    assert _max_diff(x, run_ours(name, ts, final_zero=True, **opts)) < TOL_STOCK


# --------------------------------------------------------------------------------------
# UniPC
# --------------------------------------------------------------------------------------

UNIPC = [pytest.param("bh1", marks=_needs("unipc-bh1")), pytest.param("bh2", marks=_needs("unipc-bh2"))]


@pytest.mark.parametrize("final", ["zero", "sigma_min"])
@pytest.mark.parametrize("n", [5, 20])
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("bh", UNIPC)
def test_unipc(bh, order, n, final):
    """predict_x0=True, disable_corrector=[], lower_order_final=True, default "linspace"."""
    final_zero = final == "zero"
    sch = diffusers.UniPCMultistepScheduler(solver_type=bh, solver_order=order, final_sigmas_type=final)
    ours_kw = dict(order=order)
    if bh == "bh1" and final_zero:
        # diffusers' bh1 step to sigma = 0 computes B(h) * 0 with B(h) = h = inf: NaN.  Its limit,
        # like every data-prediction step to 0, is the denoised output at the last level.
        x_prev, ts = run_diffusers(sch, n, final_zero, steps=n - 1)
        _, path, net, _ = setup()
        t_last = torch.full((x_prev.shape[0],), float(ts[-1]), dtype=F64)
        a, s = path.alpha(t_last)[:, None], path.sigma(t_last)[:, None]
        x = (x_prev - s * net(x_prev, t_last)) / a
    else:
        x, ts = run_diffusers(sch, n, final_zero)
    ours = run_ours("unipc-" + bh, ts, final_zero, **ours_kw)
    assert _max_diff(x, ours) < TOL_F64


@pytest.mark.parametrize("bh", UNIPC)
def test_unipc_predictor_only(bh):
    n = 10
    sch = diffusers.UniPCMultistepScheduler(solver_type=bh, solver_order=2, final_sigmas_type="sigma_min",
                                            disable_corrector=list(range(n)))
    x, ts = run_diffusers(sch, n, final_zero=False)
    ours = run_ours("unipc-" + bh, ts, final_zero=False, order=2, corrector=False)
    assert _max_diff(x, ours) < TOL_F64


@pytest.mark.parametrize("bh", UNIPC)
def test_unipc_stock_float32_table(bh):
    sch = diffusers.UniPCMultistepScheduler(solver_type=bh, solver_order=2, final_sigmas_type="sigma_min")
    x, ts = run_diffusers(sch, 20, final_zero=False, float64_table=False)
    assert _max_diff(x, run_ours("unipc-" + bh, ts, final_zero=False, order=2)) < TOL_STOCK


# --------------------------------------------------------------------------------------
# dynamic thresholding
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", [0.9, 0.995])
def test_dynamic_thresholding_matches_diffusers(ratio):
    """Imagen's rule: s = max(quantile(|x0|), 1), x0 <- clamp(x0, -s, s) / s (diffusers also caps s
    at sample_max_value; uncapped here)."""
    sch = diffusers.DDPMScheduler(thresholding=True, dynamic_thresholding_ratio=ratio, sample_max_value=1e9)
    x0 = 1.5 * torch.randn(5, 3, 4, 4, dtype=F64, generator=torch.Generator().manual_seed(5))
    x0[0] *= 0.3  # one sample inside [-1, 1]: left alone
    theirs = sch._threshold_sample(x0.clone())
    ours = Thresholded(FunctionDenoiser(lambda y, s: x0), "dynamic", percentile=ratio)(torch.zeros_like(x0), 1.0)
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-15)
