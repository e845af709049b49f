"""Behaviour of the multistep solvers (dpm++2m/3m, unipc-bh1/bh2, deis, ipndm): the step to s = 0,
exact NFE, lower-order-final, option validation, particle re-indexing, the identities between
the schemes, and the closed-form exactness of each update on polynomial integrands."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.integrate import quad

import diffsolve
from diffsolve.models.gmm import builtin
from diffsolve.solvers import get_solver
from diffsolve.solvers.deis import ab_update, ab_weights
from diffsolve.solvers.dpmpp import dpmpp_multistep_update, multistep_order
from diffsolve.solvers.euler import ddim_update
from diffsolve.solvers.unipc import unipc_update

F64 = torch.float64
G2 = builtin("gmm-2d")

CONFIGS = (
    [("dpm++2m", {}), ("dpm++3m", {}), ("dpm++3m", {"variant": "taylor"}), ("dpm++3m", {"lower_order_final": False})]
    + [(f"unipc-{b}", {"order": o, "corrector": c}) for b in ("bh1", "bh2") for o in (1, 2, 3) for c in (True, False)]
    + [("unipc-bh1", {"order": 3, "lower_order_final": False})]
    + [("deis", {"order": q}) for q in (1, 2, 3)] + [("ipndm", {"order": q}) for q in (1, 2, 3, 4)]
)


def _noise(b=4, n=2, seed=0):
    return torch.randn(b, n, dtype=F64, generator=torch.Generator().manual_seed(seed))


def _cid(c):
    return c[0] + "".join(f"-{k}={v}" for k, v in c[1].items())


@pytest.mark.parametrize("name,opts", CONFIGS, ids=[_cid(c) for c in CONFIGS])
def test_step_to_zero_is_the_denoised_limit_and_nfe_is_exact(name, opts):
    """NFE 1..10 to s = 0: exactly nfe calls, none at s = 0, finite samples, and the last step
    returns D(y, s_{N-1}) of the state it starts from (no h = inf correction, no NaN)."""
    noise = _noise()
    for nfe in range(1, 11):
        res = diffsolve.sample(G2, noise, solver=name, nfe=nfe, schedule="karras", return_trajectory=True, **opts)
        assert res.nfe == nfe == res.eval_levels.numel()
        assert bool((res.eval_levels > 0).all()) and bool(torch.isfinite(res.samples).all())
        s_last = res.sigmas[-2].expand(noise.shape[0])
        torch.testing.assert_close(res.samples, G2(res.trajectory[-2], s_last), rtol=1e-12, atol=1e-12)
    for nfe in (1, 2, 7):  # and to s_min
        assert diffsolve.sample(G2, noise, solver=name, nfe=nfe, schedule="log-snr", final="s_min", **opts).nfe == nfe


def _traj(name, n, final="s_min", **opts):
    return diffsolve.sample(G2, _noise(), solver=name, nfe=n, schedule="log-snr", final=final,
                            return_trajectory=True, **opts).trajectory


def _first_difference(a, b):
    for k, (u, v) in enumerate(zip(a, b)):
        if not torch.equal(u, v):
            return k
    return None


@pytest.mark.parametrize("name,opts,n,lowered", [
    ("dpm++2m", {}, 10, 1), ("dpm++3m", {}, 10, 2), ("dpm++3m", {}, 14, 2),
    ("dpm++2m", {}, 15, 0), ("dpm++3m", {}, 16, 0),                       # diffusers: only below 15 steps
    ("unipc-bh2", {"order": 3}, 20, 2), ("unipc-bh1", {"order": 2}, 20, 1),  # UniPC: at any length
    ("unipc-bh2", {"order": 3, "corrector": False}, 8, 2),
])
def test_lower_order_final_changes_exactly_the_last_steps(name, opts, n, lowered):
    """With ``lower_order_final`` the trajectories agree with the full-order run up to the
    state before the first lowered step and differ from there on."""
    a = _traj(name, n, lower_order_final=True, **opts)
    b = _traj(name, n, lower_order_final=False, **opts)
    assert _first_difference(a, b) == (None if lowered == 0 else n + 1 - lowered)


@pytest.mark.parametrize("name,opts", [("deis", {}), ("deis", {"variable": "s"}), ("dpm++3m", {}),
                                       ("unipc-bh2", {"order": 3})])
def test_lower_order_final_last_lowers_only_the_last_step(name, opts):
    """``lower_order_final="last"``: the run agrees with the full-order run until the last step,
    which is then the first-order update (DDIM) from the same state."""
    a = _traj(name, 8, lower_order_final="last", **opts)
    b = _traj(name, 8, lower_order_final=False, **opts)
    assert _first_difference(a, b) == 8
    if name == "deis":
        res = diffsolve.sample(G2, _noise(), solver=name, nfe=8, schedule="log-snr", final="s_min",
                               lower_order_final="last", **opts)
        s, s_next, y = res.sigmas[-2], res.sigmas[-1], a[-2]
        torch.testing.assert_close(a[-1], ddim_update(y, G2(y, s.expand(4)), s, s_next), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("name", ["dpm++2m", "dpm++3m"])
def test_lower_order_final_last_step_is_ddim(name):
    """Below 15 steps (to s_min) the last DPM-Solver++ step is the first-order update."""
    res = diffsolve.sample(G2, _noise(), solver=name, nfe=9, schedule="log-snr", final="s_min", return_trajectory=True)
    s, s_next, y = res.sigmas[-2], res.sigmas[-1], res.trajectory[-2]
    torch.testing.assert_close(res.samples, ddim_update(y, G2(y, s.expand(4)), s, s_next), rtol=1e-13, atol=1e-13)


def test_multistep_order_rule():
    # DPM-Solver++: warm-up, then (< 15 steps) last first order, second-to-last at most second
    assert [multistep_order(i, 6, 3, True, False) for i in range(6)] == [1, 2, 3, 3, 2, 1]
    assert [multistep_order(i, 15, 3, True, False) for i in (13, 14)] == [3, 3]
    assert multistep_order(14, 15, 3, True, True) == 1  # a step to s = 0
    assert [multistep_order(i, 30, 3, True, False, below=None) for i in (27, 28, 29)] == [3, 2, 1]
    assert [multistep_order(i, 5, 2, False, False) for i in range(5)] == [1, 2, 2, 2, 2]


@pytest.mark.parametrize("name,opts,accepted", [
    ("deis", {"order": 4}, "1, 2, 3"), ("deis", {"order": 0}, "1, 2, 3"), ("deis", {"order": True}, "1, 2, 3"),
    ("ipndm", {"order": 5}, "1, 2, 3, 4"), ("unipc", {"order": 4}, "1, 2, 3"),
    ("unipc-bh1", {"order": 2.5}, "1, 2, 3"), ("unipc-bh1", {"order": 2.0}, "1, 2, 3"),
    ("dpm++3m", {"variant": "exact"}, "reference, taylor"),
    ("unipc", {"corrector": "yes"}, "True or False"), ("dpm++2m", {"lower_order_final": 1}, "True, False or 'last'"),
    ("deis", {"lower_order_final": "first"}, "True, False or 'last'"),
])
def test_bad_options_rejected_naming_accepted_values(name, opts, accepted):
    with pytest.raises(ValueError) as e:
        get_solver(name, **opts)
    assert accepted in str(e.value) and repr(next(iter(opts.values()))) in str(e.value)


@pytest.mark.parametrize("name,opt,accepted", [
    ("dpm++2m", "order", "lower_order_final"), ("deis", "corrector", "order"),
    ("unipc-bh2", "variant", "order, corrector, lower_order_final")])
def test_unknown_options_name_the_accepted_ones(name, opt, accepted):
    with pytest.raises(TypeError) as e:
        diffsolve.sample(G2, _noise(), solver=name, nfe=5, **{opt: 1})
    assert opt in str(e.value) and accepted in str(e.value)


def test_aliases():
    assert get_solver("unipc").name == "unipc-bh2" and get_solver("dpmpp_3m").name == "dpm++3m"
    assert get_solver("unipc", order=3).order == 4 and get_solver("unipc", order=3, corrector=False).order == 3
    assert get_solver("dpm++3m").order == 3 and get_solver("dpm++3m", variant="reference").order == 2


REINDEX = [("dpm++3m", {}), ("unipc-bh1", {"order": 3}), ("unipc-bh2", {"order": 2}), ("deis", {"order": 3}),
           ("ipndm", {"order": 4})]


@pytest.mark.parametrize("name,opts", REINDEX, ids=[_cid(c) for c in REINDEX])
def test_reindex_mid_run_equals_running_the_selected_rows(name, opts):
    """Resampling particles after step 3 (history and UniPC's stored state included) gives
    exactly the samples of a run that started with the selected rows."""
    g = builtin("gmm-64")
    noise = torch.randn(6, 64, dtype=F64, generator=torch.Generator().manual_seed(3))
    idx = torch.tensor([4, 1, 1, 0])

    def hook(state):
        return state.reindex(idx) if state.i == 3 else None

    kw = dict(solver=name, nfe=9, schedule="log-snr", path="ddpm-linear", **opts)
    a = diffsolve.sample(g, noise, hooks=[hook], **kw).samples
    b = diffsolve.sample(g, noise[idx], **kw).samples
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


# -- identities between the schemes ------------------------------------------------------------

def _run(name, n=18, **opts):
    return diffsolve.sample(G2, _noise(8), solver=name, nfe=n, schedule="log-snr", final="s_min", **opts).samples


def test_identities_between_schemes():
    ddim = _run("ddim")
    for name, opts in [("deis", {"order": 1}), ("ipndm", {"order": 1}), ("unipc-bh1", {"order": 1, "corrector": False}),
                       ("unipc-bh2", {"order": 1, "corrector": False})]:
        torch.testing.assert_close(_run(name, **opts), ddim, rtol=1e-13, atol=1e-13)
    for q in (2, 3):  # variable-step AB in rho: iPNDM of order q is rhoAB-DEIS of order q
        torch.testing.assert_close(_run("ipndm", order=q), _run("deis", order=q, variable="s"), rtol=0, atol=0)
    nolof = {"lower_order_final": False}
    # UniP-2 with B(h) = e^h - 1 and a_1 = 1/2 is DPM-Solver++(2M); UniP-3 (B cancels) is the
    # unique third-order three-point update, i.e. 3M with the full Taylor coefficient
    torch.testing.assert_close(_run("unipc-bh2", order=2, corrector=False, **nolof), _run("dpm++2m", **nolof),
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(_run("unipc-bh2", order=3, corrector=False, **nolof),
                               _run("dpm++3m", variant="taylor", **nolof), rtol=1e-10, atol=1e-10)
    # ... and B(h) matters wherever a single coefficient is fixed to 1/2
    assert not torch.allclose(_run("unipc-bh1", order=2), _run("unipc-bh2", order=2), rtol=1e-6, atol=1e-6)
    assert not torch.allclose(_run("dpm++3m", variant="reference"), _run("dpm++3m"), rtol=1e-6, atol=1e-6)


# -- closed forms: each update integrates polynomial integrands exactly --------------------------

def _exact_exp_integral(poly, h):
    """int_0^h e^{-(h - tau)} poly(tau) dtau by adaptive quadrature."""
    return quad(lambda t: math.exp(-(h - t)) * poly(t), 0.0, h, epsabs=1e-15, epsrel=1e-13)[0]


LAM_NODES = [(0.0, -0.3, -0.55), (0.0, -0.7, -0.8)]  # lambda_i, lambda_{i-1}, lambda_{i-2} (non-uniform)


@pytest.mark.parametrize("nodes", LAM_NODES)
@pytest.mark.parametrize("h", [0.4, 0.05])
def test_dpmpp3m_taylor_exact_on_quadratics_reference_keeps_half_the_curvature(nodes, h):
    """D(lambda) = a + b tau + c tau^2/2 (independent of y): the "taylor" update is exact; the
    reference (diffusers) update misses exactly half of the tau^2/2 term's integral."""
    a, b, c = 0.3, -1.1, 0.7
    poly = lambda t: a + b * t + c * t * t / 2  # noqa: E731
    s = torch.tensor(math.exp(-nodes[0]), dtype=F64)
    s_next = s * math.exp(-h)
    past = torch.tensor([math.exp(-nodes[2]), math.exp(-nodes[1])], dtype=F64)  # s_{i-2}, s_{i-1}
    ds = [torch.tensor([poly(nodes[k])], dtype=F64) for k in (2, 1)]
    y = torch.tensor([0.0], dtype=F64)
    d0 = torch.tensor([poly(0.0)], dtype=F64)
    exact = _exact_exp_integral(poly, h)
    tay = dpmpp_multistep_update(y, s, s_next, d0, tuple(ds), past, 3, d2_weight=2.0)
    ref = dpmpp_multistep_update(y, s, s_next, d0, tuple(ds), past, 3, d2_weight=1.0)
    assert abs(float(tay) - exact) < 1e-12
    missing = c * _exact_exp_integral(lambda t: t * t / 2, h) / 2
    assert abs(float(ref) - (exact - missing)) < 1e-12


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("m", [2, 3])
def test_unipc_update_exact_for_polynomials_of_its_degree(variant, m):
    """(U) with m extra points satisfies the order conditions n = 1..m, so it integrates a
    denoised output that is a degree-m polynomial in lambda exactly - also with the new point at
    r = 1 (the corrector's case) - whatever B(h)."""
    coef = [0.2, -0.9, 0.5, 0.35][: m + 1]
    poly = lambda t: sum(cf * t**k for k, cf in enumerate(coef))  # noqa: E731
    h = 0.3
    s = torch.tensor(1.7, dtype=F64)
    s_next = s * math.exp(-h)
    for offsets in ([-0.25, -0.6, -0.9][:m], [-0.4, -0.75][: m - 1] + [h]):  # predictor / corrector
        pts = [(s * math.exp(-o), torch.tensor([poly(o)], dtype=F64)) for o in offsets]
        d0 = torch.tensor([poly(0.0)], dtype=F64)
        out = unipc_update(torch.tensor([0.0], dtype=F64), s, s_next, d0, pts, variant)
        assert abs(float(out) - _exact_exp_integral(poly, h)) < 1e-12, (offsets, float(out))


@pytest.mark.parametrize("q", [1, 2, 3, 4])
def test_variable_step_adams_bashforth_exact_for_polynomials(q):
    """(AB) with q nodes on a non-uniform grid integrates eps(s) = polynomial of degree q - 1
    exactly: int_{s_i}^{s_{i+1}} eps ds."""
    coef = [0.4, -0.3, 0.05, -0.002][:q]
    eps = lambda s: sum(cf * s**k for k, cf in enumerate(coef))  # noqa: E731
    levels = torch.tensor([3.0, 3.9, 5.6, 6.1][:q], dtype=F64)
    s_next = torch.tensor(2.2, dtype=F64)
    values = [torch.tensor([eps(float(v))], dtype=F64) for v in levels]
    out = ab_update(torch.tensor([0.0], dtype=F64), levels, s_next, values)
    exact = sum(cf * (2.2 ** (k + 1) - 3.0 ** (k + 1)) / (k + 1) for k, cf in enumerate(coef))
    assert abs(float(out) - exact) < 1e-12
    if q == 4:  # uniform nodes: the classic AB4 weights (55, -59, 37, -9)/24 of PNDM/iPNDM
        w = torch.tensor(ab_weights([3.0, 4.0, 5.0, 6.0], 2.0), dtype=F64)
        torch.testing.assert_close(w, torch.tensor([55, -59, 37, -9], dtype=F64) / 24, rtol=1e-14, atol=1e-14)


def test_deis_log_s_order_one_is_ddim_and_weights_integrate_exactly():
    """DEIS in log(rho), order 1: W_0 = 1 - e^{-h}, i.e. DDIM; order q: the weights of Eq. (EI-q)
    integrate e^{-u} p(u) exactly for every polynomial p of degree < q (quadrature check)."""
    from diffsolve.solvers.deis import ei_weights

    torch.testing.assert_close(_run("deis", order=1, variable="log-s"), _run("ddim"), rtol=1e-13, atol=1e-13)
    levels, s_next = [2.0, 3.1, 5.0], 1.3
    lam = [-math.log(s) for s in levels]
    h = -math.log(s_next) - lam[0]
    w = ei_weights(levels, s_next)
    for k in range(3):
        exact = quad(lambda u: math.exp(-u) * u ** k, 0, h, epsabs=0, epsrel=1e-13)[0]
        got = sum(wj * (l - lam[0]) ** k for wj, l in zip(w, lam))
        assert abs(got - exact) < 1e-13, (k, got, exact)
    assert not torch.allclose(_run("deis", order=3, variable="log-s"), _run("deis", order=3, variable="s"),
                              rtol=1e-6, atol=1e-6)
