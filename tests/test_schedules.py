"""Noise-level grids: shape, monotonicity and exact endpoints for every kind; diffusers'
timestep conventions reproduced exactly; malformed grids refused."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from diffsolve import get_path
from diffsolve.schedules import DEFAULT_S_RANGE, FINALS, SCHEDULES, make_schedule, validate_schedule

F64 = torch.float64
torch.set_num_threads(1)
FAST = settings(max_examples=40, deadline=None)
DIFFUSERS_KINDS = ("time-linspace", "time-leading", "time-trailing")
TABLES = ["ddpm-linear", "ddpm-scaled-linear", "ddpm-cosine"]
CONTINUOUS = ["vp-linear", "vp-cosine", "ve", "edm", "flow", "trig"]


def _check_grid(s: torch.Tensor, n: int, final: str):
    assert s.dtype == F64 and s.ndim == 1 and s.numel() == n + 1
    assert bool(torch.isfinite(s).all())
    d = s[1:] - s[:-1]
    assert bool((d < 0).all()), s.tolist()  # strictly decreasing: no duplicates
    assert bool((s[:-1] > 0).all())
    if final == "zero":
        assert float(s[-1]) == 0.0


@pytest.mark.parametrize("kind", [k for k in SCHEDULES if k not in DIFFUSERS_KINDS])
@FAST
@given(n=st.integers(1, 60), final=st.sampled_from(FINALS), path=st.sampled_from(TABLES + CONTINUOUS))
def test_every_kind_spans_the_trained_range(kind, n, final, path):
    p = get_path(path)
    s = make_schedule(kind, n, path=p, final=final)
    _check_grid(s, n, final)
    assert float(s[0]) == pytest.approx(p.s_max, rel=1e-12)
    last = s[-2] if final == "zero" else s[-1]
    if n > 1 or final == "s_min":
        assert float(last) == pytest.approx(p.s_min, rel=1e-12)
    if final == "s_min":
        assert float(s[-1]) == pytest.approx(p.s_min, rel=1e-12)
    p.check_s(s)  # never outside the trained range


@pytest.mark.parametrize("kind", ["karras", "log-snr", "flow-shift", "time", "time-quadratic"])
@FAST
@given(n=st.integers(1, 40), final=st.sampled_from(FINALS), lo=st.floats(1e-3, 0.5), ratio=st.floats(2.0, 1e4))
def test_explicit_limits_are_the_endpoints(kind, n, final, lo, ratio):
    hi = lo * ratio
    path = "edm" if kind.startswith("time") else None  # time kinds need a path; EDM's range is wide
    if path is not None:
        hi = min(hi, 80.0)
    s = make_schedule(kind, n, path=path, s_min=lo, s_max=hi, final=final)
    _check_grid(s, n, final)
    assert float(s[0]) == pytest.approx(hi, rel=1e-12)
    if n > 1 or final == "s_min":
        assert float(s[-2 if final == "zero" else -1]) == pytest.approx(lo, rel=1e-12)


def test_default_range_without_a_path():
    s = make_schedule("karras", 5)
    assert float(s[0]) == DEFAULT_S_RANGE[1] and float(s[-2]) == DEFAULT_S_RANGE[0] and float(s[-1]) == 0.0


def test_closed_forms():
    # Karras eq. (5) at rho = 1 is uniform in s; log-snr is geometric; flow-shift scales s
    assert torch.allclose(make_schedule("karras", 4, s_min=1.0, s_max=4.0, rho=1.0), torch.tensor(
        [4.0, 3.0, 2.0, 1.0, 0.0], dtype=F64), rtol=1e-14)
    s = make_schedule("log-snr", 4, s_min=0.01, s_max=100.0, final="s_min")
    assert torch.allclose(s, torch.tensor([100.0, 10.0, 1.0, 0.1, 0.01], dtype=F64), rtol=1e-13)
    a = make_schedule("flow-shift", 6, s_min=0.01, s_max=100.0, shift=1.0)
    u = torch.linspace(100 / 101, 0.01 / 1.01, 6, dtype=F64)
    assert torch.allclose(a[:-1], u / (1 - u), rtol=1e-12)
    # shifting by k on the same ends multiplies every level by k (SD3's shift in canonical space)
    b = make_schedule("flow-shift", 6, s_min=0.03, s_max=300.0, shift=3.0)
    assert torch.allclose(b[:-1], 3 * a[:-1], rtol=1e-12)
    # time: uniform in the path's time
    p = get_path("flow")
    t = torch.linspace(p.t_max, p.t_min, 5, dtype=F64)
    assert torch.allclose(make_schedule("time", 4, path=p, final="s_min"), t / (1 - t), rtol=1e-13)


# --------------------------------------------------------------------------------------
# diffusers' timestep conventions
# --------------------------------------------------------------------------------------


def _timesteps_of(levels: torch.Tensor, p) -> torch.Tensor:
    t = p.t_of_s(levels[:-1])
    assert torch.allclose(t, t.round(), atol=1e-8, rtol=0), t  # integer timesteps
    return t.round()


@pytest.mark.parametrize("kind", DIFFUSERS_KINDS)
@pytest.mark.parametrize("scheduler", ["DPMSolverMultistepScheduler", "UniPCMultistepScheduler",
                                       "DEISMultistepScheduler"])
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy 2 warning inside diffusers
@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 999), table=st.sampled_from(TABLES))
# torch's linspace/arange round differently from numpy's at these n; trailing yields -1 at 61
@example(n=26, table="ddpm-linear").via("discovered failure")
@example(n=48, table="ddpm-linear").via("discovered failure")
@example(n=61, table="ddpm-cosine").via("discovered failure")
def test_diffusers_spacings_give_diffusers_timesteps(kind, scheduler, n, table):
    diffusers = pytest.importorskip("diffusers")
    p = get_path(table)
    sch = getattr(diffusers, scheduler)(timestep_spacing=kind.removeprefix("time-"))
    sch.set_timesteps(n)
    theirs = sch.timesteps[:n].to(F64)  # diffusers' trailing adds a spurious n+1-th timestep -1 for some n
    assert bool((theirs >= 0).all())
    s = make_schedule(kind, n, path=p)
    _check_grid(s, n, "zero")
    assert torch.equal(_timesteps_of(s, p), theirs)
    assert torch.allclose(s[:-1], p.s(theirs), rtol=1e-14, atol=0)


@pytest.mark.parametrize("n", [1, 7, 10, 26, 48, 250])
def test_ddim_shares_trailing_but_not_linspace_or_leading(n):
    """DDIMScheduler (and DDPM/PNDM/Euler) evaluate n timesteps *ending at 0* for linspace and
    leading; the multistep schedulers drop the 0 of an (n+1)-point grid.  Trailing agrees."""
    diffusers = pytest.importorskip("diffusers")
    p = get_path("ddpm-linear")
    for spacing in ("linspace", "leading", "trailing"):
        sch = diffusers.DDIMScheduler(timestep_spacing=spacing)
        sch.set_timesteps(n)
        ours = _timesteps_of(make_schedule("time-" + spacing, n, path=p), p)
        theirs = sch.timesteps[:n].to(F64)
        if spacing == "trailing":
            assert torch.equal(ours, theirs)
        else:
            assert float(theirs[-1]) == 0.0 and float(ours[-1]) > 0
    # the 'leading' grid of both families starts below t = 999 (not at s_max)
    assert float(make_schedule("time-leading", 10, path=p)[0]) < p.s_max


def test_diffusers_spacings_need_a_table_and_end_at_zero_or_sigma_min():
    with pytest.raises(ValueError, match="discrete"):
        make_schedule("time-linspace", 10, path="vp-linear")
    # final="s_min" is diffusers' final_sigmas_type="sigma_min": the same n timesteps, then s(t_min)
    p = get_path("ddpm-linear")
    for kind in ("time-linspace", "time-leading", "time-trailing"):
        zero, smin = make_schedule(kind, 10, path=p), make_schedule(kind, 10, path=p, final="s_min")
        assert torch.equal(zero[:-1], smin[:-1]) and float(zero[-1]) == 0 and smin[-1] == p.s_min
    with pytest.raises(ValueError, match="s_min"):
        make_schedule("time-leading", 10, path="ddpm-linear", s_min=0.1)
    with pytest.raises(ValueError, match="path"):
        make_schedule("time-linspace", 10)


def test_zero_terminal_snr_table_clamps_to_its_trained_range():
    p = get_path("ddpm-scaled-linear-ztsnr")
    s = make_schedule("time-trailing", 10, path=p)
    assert float(s[0]) == pytest.approx(p.s_max, rel=1e-12) and math.isfinite(float(s[0]))
    p.check_s(s)


# --------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------

GRIDS = st.lists(st.floats(1e-3, 1e3), min_size=2, max_size=12, unique=True).map(
    lambda v: sorted(v, reverse=True))


@FAST
@given(grid=GRIDS, zero=st.booleans())
def test_validate_accepts_decreasing_positive_grids(grid, zero):
    g = grid + [0.0] if zero else grid
    out = validate_schedule(g)
    assert out.dtype == F64 and out.tolist() == g


@FAST
@given(grid=GRIDS, data=st.data())
def test_validate_rejects_corrupted_grids(grid, data):
    g = list(grid)
    i = data.draw(st.integers(0, len(g) - 1))
    how = data.draw(st.sampled_from(["swap", "dup", "neg", "nan", "inf", "zero-inside"]))
    if how == "swap":
        j = i + 1 if i + 1 < len(g) else i - 1
        g[i], g[j] = g[j], g[i]
        match = "strictly decreasing"
    elif how == "dup":
        j = i + 1 if i + 1 < len(g) else i - 1
        g[j] = g[i]
        match = "duplicated"
    elif how == "neg":
        g[i] = -g[i]
        match = "strictly decreasing|positive"
    elif how == "nan":
        g[i] = float("nan")
        match = "non-finite"
    elif how == "inf":
        g[i] = float("inf")
        match = "non-finite"
    else:
        g = g + [0.0, 0.0] if i % 2 else [g[0], 0.0] + g[1:]
        match = "duplicated|strictly decreasing|positive"
    with pytest.raises(ValueError, match=match):
        validate_schedule(g)


@pytest.mark.parametrize("bad, match", [
    ([1.0], "at least 2"),
    ([[2.0, 1.0]], "1-D"),
    ([], "at least 2"),
    ([1.0, -0.5], "positive"),
    ([0.0, 0.0], "duplicated"),
    ([1.0, 0.0, 0.0], "duplicated"),
])
def test_validate_messages(bad, match):
    with pytest.raises(ValueError, match=match):
        validate_schedule(bad)


def test_make_schedule_rejects_bad_arguments_naming_accepted_values():
    with pytest.raises(ValueError) as e:
        make_schedule("karas", 10)
    assert "karas" in str(e.value) and all(k in str(e.value) for k in SCHEDULES)
    with pytest.raises(ValueError) as e:
        make_schedule("karras", 10, final="min")
    assert "min" in str(e.value) and all(f in str(e.value) for f in FINALS)
    for n in (0, -3, 2.5, None):
        with pytest.raises(ValueError, match="n_steps"):
            make_schedule("karras", n)
    with pytest.raises(ValueError, match="s_min"):
        make_schedule("karras", 10, s_min=1.0, s_max=0.5)
    with pytest.raises(ValueError, match="s_min"):
        make_schedule("log-snr", 10, s_min=0.0, s_max=1.0)
    with pytest.raises(ValueError, match="rho"):
        make_schedule("karras", 10, rho=0.0)
    with pytest.raises(ValueError, match="shift"):
        make_schedule("flow-shift", 10, shift=-1.0)
    with pytest.raises(ValueError, match="path"):
        make_schedule("time", 10)
    # an explicit list is validated and must match the number of steps
    assert make_schedule([3.0, 1.0, 0.0], 2).tolist() == [3.0, 1.0, 0.0]
    assert make_schedule([3.0, 1.0, 0.0], None).tolist() == [3.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="2 steps but 3"):
        make_schedule([3.0, 1.0, 0.0], 3)
