"""The wrapper base forwards what a wrapper does not change, levels reach the inner network
adapter as floats (its per-level cache works through CFG), and hooks see the state, x0-hat and
a counted denoiser."""

from __future__ import annotations

import torch

import diffsolve
from diffsolve import CFG, Thresholded, get_path
from diffsolve.denoisers import DenoiserWrapper, FunctionDenoiser, NetworkDenoiser
from diffsolve.hooks import StepContext

F64 = torch.float64


def test_wrappers_forward_what_they_do_not_change():
    model = diffsolve.load("digits")
    for w in (CFG(model, 2.0), Thresholded(model), Thresholded(CFG(model, 2.0), "clip")):
        assert w.path is model.path and w.shape == model.shape and w.num_classes == model.num_classes
        assert w.null_label == model.null_label and w.class_names == model.class_names
        assert w.allow_extrapolation == model.allow_extrapolation and w.meta is model.meta
    assert not hasattr(CFG, "shape") and "shape" not in CFG(model, 2.0).__dict__  # forwarded, not copied


def test_cfg_keeps_the_network_adapters_per_level_cache():
    """A 10-step CFG run converts each grid level to network time once (in ``prepare``), not once
    per call: the levels reach the adapter as floats."""
    base = get_path("ddpm-linear")
    calls = {"t_of_s": 0}
    orig = type(base).t_of_s

    class Counted(type(base)):
        def t_of_s(self, s):
            calls["t_of_s"] += 1
            return orig(self, s)

    p = Counted.__new__(Counted)
    p.__dict__.update(base.__dict__)
    g = diffsolve.exact_model("gmm-2d")
    exact = g.network(base, "eps")
    net = lambda x, t, labels=None: exact(x, t)
    den = NetworkDenoiser(net, p, "eps")
    den.num_classes, den.null_label = 3, 3
    noise = torch.randn(4, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    res = diffsolve.sample(CFG(den, 2.0), noise, nfe=10, cond={"labels": torch.arange(4) % 3})
    assert res.nfe == 10 and calls["t_of_s"] == 1  # the one vectorised pass of prepare()


def test_cfg_float_and_per_row_levels_agree():
    model = diffsolve.load("digits")
    g = CFG(model, 2.5, interval=(0.1, 5.0))
    y = torch.randn(3, 1, 8, 8, dtype=F64, generator=torch.Generator().manual_seed(1))
    lab = torch.tensor([1, 2, 3])
    for s in (0.05, 0.7, 20.0):
        a = g(y, s, labels=lab)
        b = g(y, torch.full((3,), s, dtype=F64), labels=lab)
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_a_user_wrapper_needs_only_denoise():
    class Scaled(DenoiserWrapper):
        def denoise(self, y, s, **cond):
            assert isinstance(s, float)  # grid levels arrive as floats
            return 0.5 * self.inner(y, s, **cond)

    g = diffsolve.exact_model("gmm-2d")
    noise = torch.randn(4, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    res = diffsolve.sample(Scaled(g), noise, solver="dpm++2m", nfe=1)  # one step to zero: y = D(y, s_max)
    torch.testing.assert_close(res.samples, 0.5 * g(noise * res.sigmas[0].item(), res.sigmas[0].item()))


def test_hooks_see_x0_hat_and_a_counted_denoiser():
    g = diffsolve.exact_model("gmm-2d")
    noise = torch.randn(5, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    seen = []

    def hook(ctx: StepContext):
        i = ctx.i - 1  # the step just taken started at level i
        y_prev = traj[i]
        torch.testing.assert_close(ctx.x0, g(y_prev, ctx.sigmas[i].item()))
        seen.append(ctx.s)
        # an extra network call from a hook: counted in the run's NFE, reported apart
        d = ctx.denoise(ctx.y, ctx.s) if ctx.s > 0 else ctx.y
        assert d.shape == ctx.y.shape
        return None

    traj = diffsolve.sample(g, noise, solver="ddim", nfe=6, return_trajectory=True).trajectory
    res = diffsolve.sample(g, noise, solver="ddim", nfe=6, hooks=[hook])
    assert seen == res.sigmas[1:].tolist()
    assert res.nfe == 6 + 5 and res.info["hook_nfe"] == 5


def test_hooks_can_resample_rows():
    g = diffsolve.exact_model("gmm-2d")
    noise = torch.randn(6, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    idx = torch.tensor([0, 0, 5])
    hook = lambda ctx: ctx.state.reindex(idx) if ctx.i == 2 else None
    a = diffsolve.sample(g, noise, solver="dpm++2m", nfe=6, hooks=[hook]).samples
    b = diffsolve.sample(g, noise[idx], solver="dpm++2m", nfe=6).samples
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_function_denoiser_is_not_a_wrapper():
    assert not isinstance(FunctionDenoiser(lambda y, s: y), DenoiserWrapper)
