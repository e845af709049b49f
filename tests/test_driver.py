"""The driver (``diffsolve.sample``): NFE counted at the denoiser, budgets refused with the
nearest ones, names and inputs validated, trained range enforced, cond / hooks / trajectory /
dtype plumbing."""

from __future__ import annotations

from functools import lru_cache

import pytest
import torch

import diffsolve
from diffsolve import NFEError, from_network, get_path
from diffsolve.models.gmm import builtin
from diffsolve.schedules import SCHEDULES
from diffsolve.solvers import SOLVERS

F64 = torch.float64
torch.set_num_threads(1)


@lru_cache(maxsize=None)
def gmm():
    return builtin("gmm-2d")


def _noise(b: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 2, dtype=F64, generator=torch.Generator().manual_seed(seed))


class Counting:
    """A plain D(y, s) function that counts its calls and records its levels."""

    def __init__(self):
        self.calls, self.levels = 0, []

    def __call__(self, y, s):
        self.calls += 1
        self.levels.append(float(s[0]))
        return gmm()(y, s)


@pytest.mark.parametrize("name", sorted(SOLVERS))
@pytest.mark.parametrize("final", ["zero", "s_min"])
def test_nfe_counted_at_the_denoiser_equals_the_rule(name, final):
    slv = diffsolve.get_solver(name)
    if getattr(slv, "adaptive", False):
        D = Counting()
        res = diffsolve.sample(D, _noise(), solver=name, nfe=None, final=final)
        assert res.nfe == D.calls == len(res.eval_levels) > 0
        with pytest.raises(NFEError):
            diffsolve.sample(Counting(), _noise(), solver=name, nfe=10, final=final)
        return
    accepted = []
    for nfe in range(1, 10):
        D = Counting()
        try:
            res = diffsolve.sample(D, _noise(), solver=name, nfe=nfe, final=final)
        except NFEError as e:
            assert f"nfe={nfe}" in str(e) and "nearest" in str(e), str(e)
            assert D.calls == 0
            continue
        accepted.append(nfe)
        n_steps = res.sigmas.numel() - 1
        assert res.nfe == D.calls == nfe == len(res.eval_levels), (name, nfe, res.nfe, D.calls)
        assert slv.for_nfe(nfe, final == "zero").nfe_for_steps(n_steps, final == "zero") == nfe
        assert torch.allclose(res.eval_levels, torch.tensor(D.levels, dtype=F64), rtol=0, atol=0)
        # the network is never called at s = 0
        assert min(D.levels) > 0
    assert accepted, f"{name} honours no budget in 1..9"


def test_heun_even_budget_refused_with_the_nearest_budgets():
    with pytest.raises(NFEError) as e:
        diffsolve.sample(gmm(), _noise(), solver="heun", nfe=10)
    msg = str(e.value)
    assert "heun" in msg and "nfe=10" in msg and "9 or 11" in msg
    # without the final step to zero every step costs two: odd budgets are the refused ones
    with pytest.raises(NFEError, match="8 or 10"):
        diffsolve.sample(gmm(), _noise(), solver="heun", nfe=9, final="s_min")
    assert diffsolve.sample(gmm(), _noise(), solver="heun", nfe=11).nfe == 11
    with pytest.raises(NFEError, match="positive integer"):
        diffsolve.sample(gmm(), _noise(), solver="heun", nfe=0)


def test_unknown_names_list_the_accepted_ones():
    with pytest.raises(ValueError) as e:
        diffsolve.sample(gmm(), _noise(), solver="dpm++2", nfe=5)
    assert "dpm++2" in str(e.value) and all(n in str(e.value) for n in SOLVERS)
    with pytest.raises(ValueError) as e:
        diffsolve.sample(gmm(), _noise(), solver="ddim", nfe=5, schedule="cosine")
    assert "cosine" in str(e.value) and all(k in str(e.value) for k in SCHEDULES)
    with pytest.raises(ValueError) as e:
        diffsolve.sample(gmm(), _noise(), solver="ddim", nfe=5, final="min")
    assert "'min'" in str(e.value) and "zero" in str(e.value) and "s_min" in str(e.value)
    with pytest.raises(TypeError, match="eta"):
        diffsolve.sample(gmm(), _noise(), solver="heun", nfe=5, eta=1.0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_noise_rejected(bad):
    noise = _noise()
    noise[1, 0] = bad
    D = Counting()
    with pytest.raises(ValueError, match="NaN or inf"):
        diffsolve.sample(D, noise, solver="ddim", nfe=3)
    assert D.calls == 0


def test_malformed_inputs_rejected():
    with pytest.raises(ValueError, match="batch"):
        diffsolve.sample(gmm(), torch.tensor(1.0, dtype=F64), solver="ddim", nfe=3)
    with pytest.raises(ValueError, match="y_start"):
        diffsolve.sample(gmm(), _noise(), solver="ddim", nfe=3, y_start=torch.zeros(3, 2, dtype=F64))
    with pytest.raises(ValueError, match="nfe=None"):
        diffsolve.sample(gmm(), _noise(), solver="ddim", nfe=None, schedule="karras")
    with pytest.raises(ValueError, match="nfe=None"):  # an explicit grid of 2 steps is not nfe=5
        diffsolve.sample(gmm(), _noise(), solver="ddim", nfe=5, schedule=[10.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="seeds"):
        diffsolve.sample(gmm(), _noise(), solver="euler-a", nfe=3, seeds=[0, 1])
    with pytest.raises(TypeError, match="Denoiser"):
        diffsolve.sample("gmm-2d", _noise(), solver="ddim", nfe=3)


# --------------------------------------------------------------------------------------
# the trained range
# --------------------------------------------------------------------------------------


def test_schedule_outside_the_trained_range_is_refused_unless_allowed():
    p = get_path("ddpm-linear")
    net = gmm().network(p, "eps")
    D = from_network(net, p, "eps")
    too_high = [2 * p.s_max, 1.0, 0.0]
    too_low = [1.0, p.s_min / 2, 0.0]
    for grid in (too_high, too_low):
        with pytest.raises(ValueError) as e:
            diffsolve.sample(D, _noise(), solver="ddim", nfe=None, schedule=grid)
        assert "allow_extrapolation" in str(e.value) and "ddpm-linear" in str(e.value)
        res = diffsolve.sample(D, _noise(), solver="ddim", nfe=None, schedule=grid, allow_extrapolation=True)
        assert res.nfe == 2
        D2 = from_network(net, p, "eps", allow_extrapolation=True)
        assert diffsolve.sample(D2, _noise(), solver="ddim", nfe=None, schedule=grid).nfe == 2
    with pytest.raises(ValueError, match="allow_extrapolation"):
        diffsolve.sample(D, _noise(), solver="ddim", nfe=4, s_max=1e3)
    # s_min itself and a last level 0 are inside; so is final="s_min" on the default grid
    diffsolve.sample(D, _noise(), solver="ddim", nfe=None, schedule=[p.s_max, p.s_min, 0.0])
    diffsolve.sample(D, _noise(), solver="ddim", nfe=4, final="s_min")
    # a path given to the driver applies to a denoiser that has none
    with pytest.raises(ValueError, match="allow_extrapolation"):
        diffsolve.sample(gmm(), _noise(), solver="ddim", nfe=None, schedule=too_high, path=p)


def test_default_schedule_uses_the_denoisers_path():
    p = get_path("vp-cosine")
    D = from_network(gmm().network(p, "x0"), p, "x0")
    res = diffsolve.sample(D, _noise(), solver="ddim", nfe=5)
    assert float(res.sigmas[0]) == pytest.approx(p.s_max, rel=1e-12)
    assert float(res.sigmas[-2]) == pytest.approx(p.s_min, rel=1e-12) and float(res.sigmas[-1]) == 0.0


# --------------------------------------------------------------------------------------
# cond, hooks, trajectory, dtype
# --------------------------------------------------------------------------------------


def test_cond_kwargs_reach_the_denoiser_and_the_network():
    seen = []

    def D(y, s, label=None, scale=None):
        seen.append((label, scale))
        return gmm()(y, s)

    label = torch.arange(4)
    diffsolve.sample(D, _noise(), solver="dpm++2m", nfe=4, cond={"label": label, "scale": 2.0})
    assert len(seen) == 4 and all(lb is label and sc == 2.0 for lb, sc in seen)

    p = get_path("edm")
    exact = gmm().network(p, "x0")
    got = []

    def net(x, t, label):
        got.append(label)
        return exact(x, t)

    res = diffsolve.sample(from_network(net, p, "x0"), _noise(), solver="ddim", nfe=3, cond={"label": label})
    assert len(got) == 3 and all(g is label for g in got) and res.nfe == 3


def test_hooks_called_once_per_step_and_can_replace_the_state():
    calls = []

    def record(state):
        calls.append(state.i)
        return None

    res = diffsolve.sample(gmm(), _noise(), solver="heun", nfe=7, hooks=[record])
    assert calls == [1, 2, 3, 4] and res.nfe == 7

    def zero_last(state):
        if state.i == state.n_steps:
            return state.replace(y=torch.zeros_like(state.y))

    res = diffsolve.sample(gmm(), _noise(), solver="ddim", nfe=3, hooks=[record, zero_last])
    assert torch.equal(res.samples, torch.zeros(4, 2, dtype=F64))

    # a replaced intermediate state is what the next step continues from (multistep history too)
    def project(state):
        return state.replace(y=state.y.clamp(-5, 5))

    a = diffsolve.sample(gmm(), _noise(), solver="dpm++2m", nfe=5, hooks=[project])
    b = diffsolve.sample(gmm(), _noise(), solver="dpm++2m", nfe=5)
    assert not torch.allclose(a.samples, b.samples)


@pytest.mark.parametrize("solver, nfe, steps", [("ddim", 5, 5), ("heun", 9, 5), ("dpm++2m", 6, 6)])
def test_return_trajectory_lengths(solver, nfe, steps):
    y0 = 3.0 * _noise()
    res = diffsolve.sample(gmm(), _noise(), solver=solver, nfe=nfe, return_trajectory=True, y_start=y0)
    assert len(res.trajectory) == steps + 1 == res.sigmas.numel()
    assert torch.equal(res.trajectory[0], y0) and torch.equal(res.trajectory[-1], res.samples)
    assert diffsolve.sample(gmm(), _noise(), solver=solver, nfe=nfe).trajectory is None


def test_start_is_noise_times_s_max_and_eval_levels_are_the_grid():
    res = diffsolve.sample(gmm(), _noise(), solver="ddim", nfe=4, return_trajectory=True, s_max=20.0)
    assert torch.equal(res.trajectory[0], 20.0 * _noise())
    assert torch.equal(res.eval_levels, res.sigmas[:-1])


def test_float64_state_kept_when_the_network_runs_in_float32():
    p = get_path("flow")
    exact = gmm().network(p, "velocity")
    dtypes = []

    def net(x, t):
        dtypes.append(x.dtype)
        return exact(x.double(), t.double()).float()

    D = from_network(net, p, "velocity", net_dtype=torch.float32)
    states = []
    res = diffsolve.sample(D, _noise().float(), solver="dpm++2m", nfe=5,
                           hooks=[lambda st: states.append(st.y.dtype)])
    assert res.samples.dtype == F64 and set(states) == {F64} and set(dtypes) == {torch.float32}
    # and an explicit state dtype is honoured
    assert diffsolve.sample(gmm(), _noise(), solver="ddim", nfe=3, dtype=torch.float32).samples.dtype == torch.float32
