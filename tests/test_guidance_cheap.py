"""Cheaper and training-free guidance: Adaptive Guidance (limits gamma > 1 = CFG, gamma = -1 =
conditional-only, rows counted, per-run state), Autoguidance (guide == main is the main model;
the extrapolation in closed form), Universal Guidance's recurrence (calls counted exactly, k = 1
is the plain solver), and every wrapper with every solver on a label-conditional exact mixture."""

from __future__ import annotations

import pytest
import torch

import diffsolve
from diffsolve import CFG, GaussianMixture
from diffsolve.denoisers import Denoiser
from diffsolve.guidance.adaptive import AdaptiveGuidance
from diffsolve.guidance.autoguidance import Autoguidance
from diffsolve.guidance.free import Recurrent, UniversalGuidance
from diffsolve.rewards import RowRewards
from diffsolve.rewards import Linear
from rows import honoured_nfe

F64 = torch.float64
SOLVERS = [d["name"] for d in diffsolve.list_solvers()]


class LabelMixture(Denoiser):
    """Exact class-conditional model: class k is one Gaussian of gmm-2d's ring; the null label
    (8) is the whole mixture.  Counts the rows it evaluates."""

    num_classes, null_label, shape = 8, 8, (2,)

    def __init__(self, spread: float = 1.0):
        g = diffsolve.exact_model("gmm-2d")
        self.parts = [GaussianMixture(torch.ones(1), g.means[k:k + 1] * spread, g.c[k:k + 1]) for k in range(8)]
        self.full = GaussianMixture(g.weights, g.means * spread, g.c)
        self.rows = 0

    def denoise(self, y, s, labels=None):
        self.rows += y.shape[0]
        labels = torch.full((y.shape[0],), 8) if labels is None else labels
        out = torch.empty_like(y)
        for k in labels.unique().tolist():
            m = labels == k
            out[m] = (self.full if k == 8 else self.parts[k])(y[m], s[m])
        return out


def _noise(b=8, seed=0):
    return torch.randn(b, 2, dtype=F64, generator=torch.Generator().manual_seed(seed))


LABELS = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])


def _run(den, solver="dpm++2m", nfe=10, b=8, **kw):
    return diffsolve.sample(den, _noise()[:b], solver=solver, nfe=nfe, cond={"labels": LABELS[:b]}, **kw)


# -- Adaptive Guidance ------------------------------------------------------------------------
def test_adaptive_gamma_above_one_is_cfg_and_minus_one_is_conditional():
    model = LabelMixture()
    ag = AdaptiveGuidance(model, 3.0, gamma=1.5)
    x = _run(ag).samples
    assert torch.equal(x, _run(CFG(model, 3.0)).samples)
    assert ag.rows == 2 * 8 * 10 and ag.saved == 0.0 and bool((ag.switched_at == -1).all())
    ag = AdaptiveGuidance(model, 3.0, gamma=-1.0)
    model.rows = 0
    x = _run(ag).samples
    assert model.rows == ag.rows == 8 * 10 and ag.saved == 0.5
    assert torch.equal(x, _run(model).samples)


def test_adaptive_counts_rows_and_switches_for_good():
    model = LabelMixture()
    ag = AdaptiveGuidance(model, 3.0, gamma=0.999)
    per_call = []
    orig = ag.denoise

    def spy(y, s, **cond):
        before = ag.rows
        out = orig(y, s, **cond)
        per_call.append((ag.rows - before, ag.switched_at.clone()))
        return out

    ag.denoise = spy
    model.rows = 0
    res = _run(ag, nfe=12)
    assert model.rows == ag.rows == sum(r for r, _ in per_call)
    assert 8 * 12 < ag.rows < 2 * 8 * 12  # some switched, some calls still guided (measured: partial)
    for (r, _), (_, prev) in zip(per_call[1:], per_call[:-1]):
        assert r == 8 + int((prev < 0).sum())  # a call costs B + the rows still guided before it
    for (_, a), (_, b) in zip(per_call[:-1], per_call[1:]):
        assert bool(((a < 0) | (b == a)).all())  # a switch is never undone
    assert res.nfe == 12 and ag.calls == 12


def test_adaptive_resets_between_runs_and_batch_sizes():
    model = LabelMixture()
    ag = AdaptiveGuidance(model, 3.0, gamma=0.999)
    x1, rows1 = _run(ag).samples, ag.rows
    x2, rows2 = _run(ag).samples, ag.rows
    assert torch.equal(x1, x2) and rows1 == rows2
    x3 = _run(ag, b=3).samples  # rows are independent: the first 3 of the batch of 8
    assert ag.switched_at.shape == (3,)
    torch.testing.assert_close(x3, x1[:3], rtol=1e-12, atol=1e-12)
    # a direct call with a new batch size starts a new run too
    y = _noise()[:5]
    ag(y, 2.0, labels=LABELS[:5])
    assert ag.calls == 1 and ag.rows == 10


# -- Autoguidance --------------------------------------------------------------------------
def test_autoguidance_with_itself_is_the_main_model_and_extrapolates():
    main = LabelMixture()
    ag = Autoguidance(main, main, scale=2.5)
    assert torch.equal(_run(ag).samples, _run(main).samples)
    assert ag.guide_calls == 10 and ag.rows == 2 * 8 * 10
    guide = LabelMixture(spread=0.8)
    ag = Autoguidance(main, guide, scale=2.5)
    y, s, lab = _noise(), 0.7, LABELS
    d1, d0 = main(y, s, labels=lab), guide(y, s, labels=lab)
    torch.testing.assert_close(ag(y, s, labels=lab), d0 + 2.5 * (d1 - d0), rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match="shape"):
        Autoguidance(main, diffsolve.load("digits"), 2.0)


# -- Universal Guidance and recurrence --------------------------------------------------------
def test_recurrence_counts_every_call_and_k1_is_the_solver():
    g = diffsolve.exact_model("gmm-2d")
    r = Linear(torch.tensor([1.0, 0.0], dtype=F64))
    ug = UniversalGuidance(g, r, scale=1.0)
    plain = diffsolve.sample(ug, _noise(), solver="dpm++2s", nfe=9).samples
    assert ug.vjps == 9
    same = diffsolve.sample(ug, _noise(), solver=Recurrent("dpm++2s", k=1), nfe=9).samples
    assert ug.vjps == 9 and torch.equal(plain, same)
    res = diffsolve.sample(ug, _noise(), solver=Recurrent("dpm++2s", k=3), nfe=27)
    assert res.nfe == 27 and ug.vjps == 27  # 5 steps (2 calls each, 1 for the last), 3 times
    with pytest.raises(ValueError, match="multiple of 3"):
        diffsolve.sample(ug, _noise(), solver=Recurrent("dpm++2s", k=3), nfe=10)
    with pytest.raises(ValueError, match="adaptive"):
        Recurrent("dpm-solver-12", k=2)


def test_universal_guidance_tilts_toward_the_reward():
    # forward guidance on a linear reward moves the mean along it; more with a larger scale
    g = diffsolve.exact_model("gmm-2d")
    means = []
    for w in (0.0, 0.5, 2.0):
        ug = UniversalGuidance(g, Linear(torch.tensor([1.0, 0.0], dtype=F64)), scale=w)
        means.append(float(diffsolve.sample(ug, _noise(256), nfe=10).samples[:, 0].mean()))
    assert means[0] < means[1] < means[2]
    rr = RowRewards([Linear(torch.tensor([1.0, 0.0])), Linear(torch.tensor([0.0, 1.0]))], torch.tensor([0, 1, 1]))
    assert rr(torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])).tolist() == [1.0, 4.0, 6.0]


# -- every wrapper with every solver ----------------------------------------------------------
@pytest.mark.parametrize("solver", SOLVERS)
def test_every_wrapper_with_every_solver(solver):
    from diffsolve.solvers.base import get_solver

    slv = get_solver(solver)
    nfe = honoured_nfe(slv)
    kw = {"schedule": "karras"} if nfe is not None else {"rtol": 0.05}
    model = LabelMixture()
    for den in (AdaptiveGuidance(model, 2.0, gamma=0.999), Autoguidance(model, LabelMixture(0.8), 2.0),
                UniversalGuidance(model, Linear(torch.tensor([1.0, 0.0], dtype=F64)), 0.5)):
        res = diffsolve.sample(den, _noise(), solver=solver, nfe=nfe, cond={"labels": LABELS}, **kw)
        assert bool(torch.isfinite(res.samples).all())
        calls = getattr(den, "calls", None) or getattr(den, "guide_calls", None) or den.vjps
        assert calls == res.nfe
    if not slv.adaptive:
        ug = UniversalGuidance(model, Linear(torch.tensor([1.0, 0.0], dtype=F64)), 0.5)
        res = diffsolve.sample(ug, _noise(), solver=Recurrent(solver, k=2), nfe=2 * nfe,
                               cond={"labels": LABELS})
        assert res.nfe == ug.vjps == 2 * nfe and bool(torch.isfinite(res.samples).all())
