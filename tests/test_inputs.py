"""Every bad input is answered by diffsolve itself: the error is raised from diffsolve's own code
(never from deep inside torch), is one of the documented kinds, and names the offending argument.
Examples from each category of the fuzzing pass (issue 11) first, then a property-based test
that throws random values at every argument of the public API."""

from __future__ import annotations

import math
import traceback

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import diffsolve
from diffsolve import CFG, Thresholded, from_network, get_path, make_schedule
from diffsolve.denoisers import FunctionDenoiser
from diffsolve.validate import MAX_NFE

F64 = torch.float64
ERRORS = (ValueError, TypeError, FloatingPointError, FileNotFoundError)


def gmm():
    return diffsolve.exact_model("gmm-2d")


def _noise(b=4, d=2):
    return torch.randn(b, d, dtype=F64, generator=torch.Generator().manual_seed(0))


def diffsolve_error(fn, *names):
    """Call ``fn``; it must raise one of ERRORS from a diffsolve frame, naming one of ``names``."""
    with pytest.raises(ERRORS) as info:
        fn()
    frames = traceback.extract_tb(info.value.__traceback__)
    where = frames[-1].filename
    assert "/diffsolve/" in where and "/site-packages/torch" not in where, (
        f"{type(info.value).__name__} raised outside diffsolve, at {where}: {info.value}")
    msg = str(info.value)
    assert any(n in msg for n in names), f"message does not name {names}: {msg}"
    return msg


# --------------------------------------------------------------------------------------
# examples, one or more per category of the issue
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("nfe", [True, False, 2.5, "10", 0, -3, MAX_NFE + 1, 10**12, torch.tensor(1.5)])
def test_bad_nfe_is_refused_at_once(nfe):
    diffsolve_error(lambda: diffsolve.sample(gmm(), _noise(), nfe=nfe), "nfe")


@pytest.mark.parametrize("nfe", [np.int64(6), np.int32(6), torch.tensor(6)])
def test_integer_like_nfe_is_accepted(nfe):
    assert diffsolve.sample(gmm(), _noise(), nfe=nfe).nfe == 6


@pytest.mark.parametrize("noise", [torch.zeros(4, 2, dtype=torch.int64), torch.zeros(4, 2, dtype=torch.bool),
                                   torch.zeros(4, 2, dtype=torch.complex128), torch.zeros(0, 2),
                                   torch.tensor(1.0), np.zeros((4, 2)), torch.full((4, 2), math.nan)])
def test_bad_noise_is_refused(noise):
    diffsolve_error(lambda: diffsolve.sample(gmm(), noise, nfe=4), "noise")


@pytest.mark.parametrize("dtype", [torch.int64, torch.complex64, torch.bool, "float64", np.float64])
def test_bad_state_dtype_is_refused(dtype):
    diffsolve_error(lambda: diffsolve.sample(gmm(), _noise(), nfe=4, dtype=dtype), "dtype")


def test_bad_y_start_is_refused():
    bad = _noise()
    bad[1, 0] = math.nan
    diffsolve_error(lambda: diffsolve.sample(gmm(), _noise(), nfe=4, y_start=bad), "y_start")
    diffsolve_error(lambda: diffsolve.sample(gmm(), _noise(), nfe=4, y_start=torch.zeros(3, 2, dtype=F64)), "y_start")


@pytest.mark.parametrize("seeds", [[0, 1, 2, 2.5], [0, 1, 2, -1], [0, 1, 2, 2**64], [0, 1, 2, True], [0, 1, 2],
                                   [0, 1, 2, "3"], "0123"])
def test_bad_seeds_are_refused(seeds):
    diffsolve_error(lambda: diffsolve.sample(gmm(), _noise(), solver="ddpm", nfe=4, seeds=seeds), "seed")


def test_seeds_are_checked_for_deterministic_solvers_too():
    diffsolve_error(lambda: diffsolve.sample(gmm(), _noise(), nfe=4, seeds=[0, 1, 2, 1.5]), "seed")


def test_cond_is_refused_where_the_denoiser_cannot_take_it():
    # a typo'd key on an exact (unconditional) model, and a non-dict cond
    diffsolve_error(lambda: diffsolve.sample(gmm(), _noise(), nfe=4, cond={"lables": torch.arange(4)}), "lables")
    diffsolve_error(lambda: diffsolve.sample(gmm(), _noise(), nfe=4, cond=[1, 2]), "cond")
    # a plain function without the keyword
    diffsolve_error(lambda: diffsolve.sample(lambda y, s: gmm()(y, s), _noise(), nfe=4, cond={"labels": 1}),
                    "labels")
    # a network adapter whose network does not take it
    p = get_path("flow")
    net = gmm().network(p, "velocity")
    den = from_network(lambda x, t: net(x, t), p, "velocity")
    diffsolve_error(lambda: diffsolve.sample(den, _noise(), nfe=4, cond={"labels": 1}), "labels")


def digits():
    return diffsolve.load("digits")


def _digit_noise(b=4):
    return torch.randn(b, 1, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("labels", [torch.tensor([0.0, 1.5, 2.0, 3.0]), torch.arange(3), torch.arange(8).reshape(2, 4),
                                    torch.tensor([0, 1, 2, 11]), torch.tensor([0, 1, 2, -1]),
                                    torch.tensor([True, False, True, True]), "3"])
def test_bad_labels_are_refused_by_the_model(labels):
    diffsolve_error(lambda: diffsolve.sample(digits(), _digit_noise(), nfe=3, cond={"labels": labels}), "label")


def test_labels_for_an_unconditional_model_and_wrong_shapes_are_refused():
    moons = diffsolve.load("moons")
    if moons.num_classes == 0:
        diffsolve_error(lambda: diffsolve.sample(moons, _noise(), nfe=3, cond={"labels": torch.arange(4)}), "label")
    diffsolve_error(lambda: diffsolve.sample(digits(), _noise(), nfe=3), "shape")


def test_cfg_needs_labels_and_a_finite_scale():
    model = digits()
    diffsolve_error(lambda: diffsolve.sample(CFG(model, 5.0), _digit_noise(), nfe=3), "labels")
    for bad in (math.nan, math.inf, "2", True):
        diffsolve_error(lambda: CFG(model, bad), "scale")
    diffsolve_error(lambda: CFG(model, 2.0, interval=(1.0, math.nan)), "interval")
    diffsolve_error(lambda: CFG(model, 2.0, interval=(5.0, 1.0)), "interval")


def test_bad_denoiser_outputs_are_named():
    wrong_shape = lambda y, s: y[:, :1]
    diffsolve_error(lambda: diffsolve.sample(wrong_shape, _noise(), nfe=3), "shape")
    ints = lambda y, s: y.long()
    diffsolve_error(lambda: diffsolve.sample(ints, _noise(), nfe=3), "dtype")
    not_a_tensor = lambda y, s: 0.0
    diffsolve_error(lambda: diffsolve.sample(not_a_tensor, _noise(), nfe=3), "float")
    # a network whose output would broadcast against its input: refused, not broadcast
    p = get_path("ddpm-linear")
    den = from_network(lambda x, t: torch.zeros(x.shape[0], 1, dtype=x.dtype), p, "eps")
    diffsolve_error(lambda: diffsolve.sample(den, _noise(), nfe=3), "shape")


def test_non_finite_results_are_traced_to_their_cause():
    calls = {"n": 0}

    def nan_at_third_call(y, s):
        calls["n"] += 1
        d = gmm()(y, s)
        return d * math.nan if calls["n"] == 3 else d

    msg = diffsolve_error(lambda: diffsolve.sample(nan_at_third_call, _noise(), nfe=5), "call 3")
    assert "denoiser" in msg and "not the solver" in msg
    # a guidance scale that overflows the guided output: the denoiser (wrapper) is named
    model = digits()
    big = CFG(model, 1e308)
    msg = diffsolve_error(lambda: diffsolve.sample(big, _digit_noise().double(), nfe=3,
                                                   cond={"labels": torch.arange(4)}), "denoiser")
    # a hook that writes NaN is named as the cause
    hook = lambda ctx: ctx.replace(y=ctx.y * math.nan) if ctx.i == 2 else None
    diffsolve_error(lambda: diffsolve.sample(gmm(), _noise(), nfe=4, hooks=[hook]), "hook")


def test_unstable_step_is_named_as_the_solver_not_the_denoiser():
    # a denoiser that is finite everywhere, and a step rule that overflows: the explicit
    # Euler step in s of this D grows y by s / s_next each step
    huge = lambda y, s: -1e300 * y
    msg = diffsolve_error(lambda: diffsolve.sample(huge, _noise(), solver="ddim", nfe=4, schedule=[80.0, 40.0, 1e-3, 1e-6, 0.0]),
                          "solver", "step", "denoiser")
    assert "NaN" in msg or "inf" in msg


@pytest.mark.parametrize("kw, name", [
    (dict(rho=0.0), "rho"), (dict(rho=math.nan), "rho"), (dict(shift=-1.0), "shift"), (dict(s_min=-1.0), "s_min"),
    (dict(s_max=math.inf), "s_max"), (dict(s_min="0.1"), "s_min"), (dict(final="end"), "final"),
    (dict(schedule="karas"), "karas"), (dict(schedule=[1.0]), "schedule"), (dict(schedule=[5.0, 5.0, 0.0]), "duplicated"),
    (dict(schedule=5), "schedule"), (dict(progress="yes"), "progress"), (dict(return_trajectory=1), "return_trajectory"),
    (dict(hooks=lambda ctx: None), "hooks"), (dict(hooks=[3]), "hooks"), (dict(solver="dpm++9m"), "dpm++9m"),
    (dict(path="ddpm-lin"), "ddpm-lin"), (dict(solver="ddim", eta=0.5), "eta"),
])
def test_driver_options_are_checked(kw, name):
    kw = {"nfe": 4, "solver": "dpm++2m", **kw}  # a named solver: solver="auto" refuses grid options outright
    if isinstance(kw.get("schedule"), list):
        kw["nfe"] = None
    diffsolve_error(lambda: diffsolve.sample(gmm(), _noise(), **kw), name)


def test_hook_must_return_a_state_or_none():
    diffsolve_error(lambda: diffsolve.sample(gmm(), _noise(), nfe=3, hooks=[lambda ctx: ctx.y]), "hook")
    diffsolve_error(lambda: diffsolve.sample(gmm(), _noise(), nfe=3, hooks=[lambda ctx: ctx]), "ctx.state")
    bad_shape = lambda ctx: ctx.replace(y=ctx.y[:, :1])
    diffsolve_error(lambda: diffsolve.sample(gmm(), _noise(), nfe=3, hooks=[bad_shape]), "shape")


@pytest.mark.parametrize("kw, name", [(dict(max_value=-1.0), "max_value"), (dict(max_value=0.0), "max_value"),
                                      (dict(max_value=math.nan), "max_value"), (dict(percentile=0.0), "percentile"),
                                      (dict(kind="soft"), "soft")])
def test_thresholding_options(kw, name):
    diffsolve_error(lambda: Thresholded(gmm(), **kw), name)


@pytest.mark.parametrize("kw, name", [(dict(sigma_data=0.0), "sigma_data"), (dict(sigma_data=-1.0), "sigma_data"),
                                      (dict(sigma_data=math.nan), "sigma_data"), (dict(net_dtype=torch.int8), "net_dtype"),
                                      (dict(prediction="epsilon"), "epsilon"), (dict(path="vp"), "vp"),
                                      (dict(allow_extrapolation="no"), "allow_extrapolation")])
def test_network_adapter_options(kw, name):
    args = {"path": "edm", "prediction": "edm", **kw}
    diffsolve_error(lambda: from_network(lambda x, t: x, args.pop("path"), args.pop("prediction"), **args), name)


def test_schedule_builder_checks_its_arguments():
    diffsolve_error(lambda: make_schedule("karras", 0, path="edm"), "n_steps")
    diffsolve_error(lambda: make_schedule("karras", True, path="edm"), "n_steps")
    diffsolve_error(lambda: make_schedule("karras", 5, path="edm", rho=-2.0), "rho")
    diffsolve_error(lambda: make_schedule("nope", 5, path="edm"), "nope")


# --------------------------------------------------------------------------------------
# property-based: random values for every argument
# --------------------------------------------------------------------------------------

ANY = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6), st.lists(st.integers(-3, 3), max_size=4), st.lists(st.floats(-5, 5), max_size=4),
    st.sampled_from([torch.float16, torch.int32, torch.complex64, np.int64(3), np.float32(0.5), complex(1, 1),
                     torch.tensor(2), torch.tensor([1.0, math.nan]), torch.zeros(4, 2), {"a": 1}, (1, 2), b"x"]),
)

SAMPLE_ARGS = ["nfe", "solver", "schedule", "path", "s_min", "s_max", "final", "seeds", "cond", "hooks", "dtype",
               "y_start", "rho", "shift", "return_trajectory", "progress", "allow_extrapolation"]


def _check_outcome(call, name, named=None):
    """Run ``call``: a result, or one of ERRORS raised in diffsolve's code whose message names
    the argument (one of ``named``, default ``name``)."""
    try:
        res = call()
    except ERRORS as e:
        where = traceback.extract_tb(e.__traceback__)[-1].filename
        assert "/diffsolve/" in where, f"{name}: {type(e).__name__} raised outside diffsolve ({where}): {e}"
        msg = str(e)
        assert any(n in msg for n in (named or (name,))), f"{name}: the message does not name it: {msg}"
        return None
    return res


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(SAMPLE_ARGS), value=ANY, solver=st.sampled_from(["dpm++2m", "heun", "ddpm", "unipc"]))
def test_random_arguments_to_sample_give_a_diffsolve_error_or_a_finite_result(name, value, solver):
    kw = {"solver": solver, "nfe": 5, name: value}
    # the argument's name, or its value where the value is a name (unknown solver 'x', ...)
    named = (name, repr(value)) + (("seed",) if name == "seeds" else ()) + (("hook",) if name == "hooks" else ())
    if name == "cond" and isinstance(value, dict):
        named += tuple(repr(k) for k in value)
    res = _check_outcome(lambda: diffsolve.sample(gmm(), _noise(), **kw), name, named)
    if res is not None:
        assert res.samples.shape == (4, 2) and bool(torch.isfinite(res.samples).all())


def _solver_options():
    from diffsolve.solvers import SOLVERS
    from diffsolve.solvers.registry import solver_options as _accepted_options

    out = []
    for name, cls in sorted(SOLVERS.items()):
        for opt in _accepted_options(cls) or ():
            out.append((name, opt))
    return out


SOLVER_OPTIONS = _solver_options()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pair=st.sampled_from(SOLVER_OPTIONS), value=ANY)
def test_random_solver_options_give_a_diffsolve_error_or_a_finite_result(pair, value):
    solver, opt = pair
    slv = _check_outcome(lambda: diffsolve.get_solver(solver, **{opt: value}), f"{solver}.{opt}", (opt,))
    if slv is None:
        return
    adaptive = getattr(slv, "adaptive", False)
    res = _check_outcome(lambda: diffsolve.sample(gmm(), _noise(), solver=slv, nfe=None if adaptive else 9,
                                                  schedule="log-snr", seeds=[0, 1, 2, 3]), f"{solver}.{opt}",
                         (opt, "nfe", "budget", "step", "NaN"))
    if res is not None:
        assert bool(torch.isfinite(res.samples).all())


@settings(max_examples=150, deadline=None)
@given(args=st.tuples(ANY, ANY, ANY))
def test_random_arguments_to_the_wrappers_and_adapters(args):
    a, b, c = args
    model = digits()
    _check_outcome(lambda: CFG(model, a, b if isinstance(b, tuple) else (0.0, math.inf), null_label=c), "CFG",
                   ("scale", "interval", "null_label"))
    _check_outcome(lambda: Thresholded(model, "dynamic", percentile=a, max_value=b), "Thresholded",
                   ("percentile", "max_value"))
    _check_outcome(lambda: from_network(lambda x, t: x, "edm", "edm", sigma_data=a, net_dtype=c), "from_network",
                   ("sigma_data", "net_dtype"))
    _check_outcome(lambda: get_path(a), "get_path", ("path",))
    _check_outcome(lambda: make_schedule("karras", a, path="edm", rho=b), "make_schedule", ("n_steps", "rho"))
    _check_outcome(lambda: diffsolve.NoiseSource([a, b]), "NoiseSource", ("seed",))
    _check_outcome(lambda: FunctionDenoiser(a), "FunctionDenoiser", ("callable",))


# --------------------------------------------------------------------------------------
# the second fuzzing pass: what it found accepted silently or answered unclearly
# --------------------------------------------------------------------------------------


def test_network_outputs_that_would_be_cast_are_refused():
    p = get_path("ddpm-linear")
    net = gmm().network(p, "eps")
    for bad in (lambda x, t: net(x, t).long(), lambda x, t: net(x, t).to(torch.complex128)):
        diffsolve_error(lambda: diffsolve.sample(from_network(bad, p, "eps"), _noise(), nfe=3, solver="ddim"), "dtype")


def test_grid_options_that_would_be_ignored_are_refused():
    kw = dict(solver="dpm++2m")  # a named solver (solver="auto" refuses every grid option)
    diffsolve_error(lambda: diffsolve.sample(gmm(), _noise(), nfe=3, shift=5.0, **kw), "shift")
    diffsolve_error(lambda: diffsolve.sample(gmm(), _noise(), nfe=3, schedule="log-snr", rho=3.0, **kw), "rho")
    diffsolve_error(lambda: diffsolve.sample(gmm(), _noise(), nfe=None, schedule=[10.0, 1.0, 0.0], rho=3.0, **kw), "rho")
    # the options still shape the schedules they belong to
    a = diffsolve.sample(gmm(), _noise(), nfe=4, rho=3.0, **kw).sigmas
    b = diffsolve.sample(gmm(), _noise(), nfe=4, **kw).sigmas
    assert not torch.equal(a, b)


def test_an_explicit_schedule_and_final_must_agree():
    res = diffsolve.sample(gmm(), _noise(), nfe=None, schedule=[10.0, 1.0], solver="ddim")
    assert res.sigmas.tolist() == [10.0, 1.0]  # documented: the states at s = 1
    diffsolve_error(lambda: diffsolve.sample(gmm(), _noise(), nfe=None, schedule=[10.0, 1.0], final="zero"), "final")
    diffsolve_error(lambda: diffsolve.sample(gmm(), _noise(), nfe=None, schedule=[10.0, 1.0, 0.0], final="s_min"),
                    "final")
    diffsolve_error(lambda: diffsolve.sample(gmm(), _noise(), nfe=None, schedule=[True, False]), "schedule")


def test_cfg_null_label_must_be_a_label_of_the_model():
    diffsolve_error(lambda: CFG(digits(), 2.0, null_label=11), "null_label")
    assert CFG(digits(), 2.0, null_label=5).null_label == 5  # documented: negative guidance away from class 5


def test_reindex_needs_integer_rows_and_batch_changes_go_through_it():
    g = gmm()
    diffsolve_error(lambda: diffsolve.sample(g, _noise(), nfe=3, hooks=[
        lambda ctx: ctx.state.reindex(torch.tensor([0.5, 1.0, 2.0, 3.0]))]), "integer")
    shrink = lambda ctx: ctx.replace(y=ctx.y[:1])
    diffsolve_error(lambda: diffsolve.sample(g, _noise(), nfe=4, solver="dpm++2m", hooks=[shrink]), "reindex")
    diffsolve_error(lambda: diffsolve.sample(g, _noise(), nfe=3, hooks=[lambda: None]), "hooks[0]")


def test_meta_tensors_are_refused_by_name():
    diffsolve_error(lambda: diffsolve.sample(gmm(), torch.empty(2, 2, device="meta"), nfe=3), "noise")
    diffsolve_error(lambda: diffsolve.sample(gmm(), _noise(), nfe=3, y_start=torch.empty(4, 2, device="meta")),
                    "y_start")


def test_absurd_levels_are_refused():
    diffsolve_error(lambda: diffsolve.sample(gmm(), _noise(), nfe=3, s_max=1e154), "overflow")


def test_meta_labels_are_refused_by_name():
    diffsolve_error(lambda: diffsolve.sample(digits(), _digit_noise(2), nfe=3,
                                             cond={"labels": torch.tensor([1, 2], device="meta")}), "labels")
