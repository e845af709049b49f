"""The deepinv peer (diffsolve.bench.deepinv_peer): deepinv's physics agree with our operators,
the wrapped denoiser is ours in deepinv's units, and DPS / DDRM / DiffPIR run on our prior with
the network calls they make counted (VJPs apart)."""

import sys

import pytest
import torch

import diffsolve
from diffsolve.bench.deepinv_peer import (DEEPINV_METHODS, DeepinvDenoiser, deepinv_available, default_steps,
                                          load_deepinv, run_deepinv, to_deepinv_physics)
from diffsolve.denoisers.base import FunctionDenoiser
from diffsolve.inverse import Denoising, GaussianBlur, Inpainting, LinearOperator, SuperResolution

pytestmark = pytest.mark.skipif(not deepinv_available(),
                                reason="deepinv is not installed (pip install --no-deps deepinv natsort h5py)")

F64 = torch.float64
SHAPE = (1, 8, 8)


def _mask(shape=SHAPE):
    return (torch.rand(*shape, generator=torch.Generator().manual_seed(3)) < 0.4).to(F64)


OPERATORS = {
    "inpainting": lambda: Inpainting(_mask()),
    "inpainting-2ch": lambda: Inpainting(_mask((2, 4, 6))),
    "sr2": lambda: SuperResolution(2, SHAPE),
    "sr4": lambda: SuperResolution(4, SHAPE),
    "blur": lambda: GaussianBlur(1.2, 5, SHAPE),
    "blur-2ch": lambda: GaussianBlur(0.8, 3, (2, 4, 6)),
    "denoising": lambda: Denoising(SHAPE),
}


def _rand(shape, seed, batch=3):
    return torch.randn(batch, *shape, dtype=F64, generator=torch.Generator().manual_seed(seed))


def _gaussian_prior(shape=SHAPE):
    """The exact denoiser of x0 ~ N(0, I) on the EDM path: D(y, s) = y / (1 + s^2)."""
    d = FunctionDenoiser(lambda y, s: y / (1 + s.to(y.dtype).reshape(-1, *[1] * (y.ndim - 1)) ** 2),
                         path=diffsolve.get_path("edm"))
    d.shape = shape
    return d


def test_import_leaves_no_torchvision_stub_behind():
    dinv = load_deepinv()
    assert hasattr(dinv.sampling, "DPS") and hasattr(dinv.sampling, "DDRM") and hasattr(dinv.sampling, "DiffPIR")
    stub = [k for k, m in sys.modules.items() if k.split(".")[0] == "torchvision"
            and type(getattr(getattr(m, "__spec__", None), "loader", None)).__name__ == "_TorchvisionStub"]
    assert stub == []


@pytest.mark.parametrize("name", list(OPERATORS))
@pytest.mark.parametrize("decomposable", [False, True])
def test_deepinv_physics_agree_with_our_operators(name, decomposable):
    """On x01 = (x + 1) / 2: deepinv's A x01 is our (A x + A 1) / 2, embedded in deepinv's
    measurement space (Inpainting: zero-filled), and the adjoints agree."""
    op = OPERATORS[name]()
    phys, embed = to_deepinv_physics(op, 0.05, decomposable=decomposable)
    x = _rand(op.in_shape, 1)
    ones = torch.ones(1, *op.in_shape, dtype=F64)
    ours = embed((op(x) + op(ones)) / 2)
    theirs = phys.A(((x + 1) / 2).float()).double()
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
    v = _rand(op.out_shape, 2)
    torch.testing.assert_close(phys.A_adjoint(embed(v).float()).double(), op.adjoint(v), atol=1e-5, rtol=0)
    assert float(phys.noise_model.sigma) == pytest.approx(0.05)
    if decomposable:  # what DDRM reads
        assert hasattr(phys, "mask") and hasattr(phys, "V_adjoint")


def test_dense_operator_gets_a_generic_physics():
    op = LinearOperator(torch.randn(5, 16, dtype=F64, generator=torch.Generator().manual_seed(0)), (1, 4, 4))
    phys, embed = to_deepinv_physics(op, 0.1)
    x = _rand(op.in_shape, 4)
    torch.testing.assert_close(phys.A(x), op(x))


def test_wrapped_denoiser_is_ours_in_deepinv_units():
    """deepinv's D01(x, sigma) on [0, 1] data with VE sigma in [0, 1] units is (D(2x - 1, 2 sigma) + 1) / 2."""
    prior = diffsolve.load("mnist")
    labels = torch.tensor([3, 10])
    den = DeepinvDenoiser(prior, {"labels": labels})
    x01 = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for sigma in (0.3, torch.tensor([0.3, 0.3]), torch.tensor(0.3).reshape(1, 1, 1, 1)):
        got = den(x01, sigma)
        want = (prior(2 * x01 - 1, 0.6, labels=labels) + 1) / 2
        torch.testing.assert_close(got, want)
    per_row = den(x01, torch.tensor([0.1, 1.0]))
    torch.testing.assert_close(per_row[1:], (prior(2 * x01[1:] - 1, 2.0, labels=labels[1:]) + 1) / 2)
    assert den.calls == 4 and den.vjp == 0


def test_wrapped_denoiser_counts_vjps_clamps_and_identity():
    den = DeepinvDenoiser(_gaussian_prior())
    x = torch.rand(2, *SHAPE, requires_grad=True)
    out = den(x, 0.5)
    torch.autograd.grad(out.sum(), x)
    assert (den.calls, den.vjp) == (1, 1)
    den(x.detach(), 500.0)  # s = 1000 > s_max = 80: evaluated at 80, counted
    assert den.clamped == 1 and den.calls == 2
    y = torch.rand(2, *SHAPE)
    assert den(y, 0.0) is y and den.identity == 1 and den.calls == 2  # the exact limit D(y, 0) = y, no call
    with pytest.raises(ValueError, match="out_of_range"):
        DeepinvDenoiser(_gaussian_prior(), out_of_range="wrap")
    with pytest.raises(ValueError, match="data_range"):
        DeepinvDenoiser(_gaussian_prior(), data_range=(1.0, -1.0))


@pytest.mark.parametrize("method", DEEPINV_METHODS)
@pytest.mark.parametrize("name", ["inpainting", "sr2", "blur", "denoising"])
def test_each_peer_runs_and_its_calls_are_counted(method, name):
    op = OPERATORS[name]()
    x = _rand(op.in_shape, 5, batch=2).clamp(-1, 1)
    y = op.measure(x, 0.1, seeds=[0, 1])
    r = run_deepinv(method, _gaussian_prior(op.in_shape), op, y, 0.1, nfe=4, seeds=[0, 1])
    assert r["samples"].shape == (2, *op.in_shape) and bool(torch.isfinite(r["samples"]).all())
    assert r["nfe"] == 4  # DPS: 2 steps of a forward call and a VJP
    assert r["vjp"] == (2 if method == "dps" else 0)
    assert r["info"]["calls"] == (2 if method == "dps" else 4)
    assert r["info"]["identity"] == (1 if method == "ddrm" else 0)
    assert r["seconds"] > 0 and r["info"]["sigma01"] == pytest.approx(0.05)


def test_same_seeds_same_samples_and_the_global_rng_is_left_alone():
    op = OPERATORS["inpainting"]()
    y = op.measure(_rand(SHAPE, 6, batch=2), 0.1)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = run_deepinv("dps", _gaussian_prior(), op, y, 0.1, nfe=4, seeds=[7, 8])["samples"]
    assert torch.equal(torch.random.get_rng_state(), before)
    b = run_deepinv("dps", _gaussian_prior(), op, y, 0.1, nfe=4, seeds=[7, 8])["samples"]
    c = run_deepinv("dps", _gaussian_prior(), op, y, 0.1, nfe=4, seeds=[9, 8])["samples"]
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.slow
def test_default_steps_are_what_deepinv_runs():
    """At deepinv's defaults the counted calls are :func:`default_steps` (a cheap exact prior)."""
    op = Denoising(SHAPE)
    y = op.measure(torch.zeros(1, *SHAPE, dtype=F64), 0.1)
    for method in DEEPINV_METHODS:
        r = run_deepinv(method, _gaussian_prior(), op, y, 0.1, seeds=[0])
        assert r["nfe"] == default_steps(method), method
        assert r["info"]["steps"] == "default"


def test_refusals_name_the_bad_value():
    op = OPERATORS["inpainting"]()
    y = op.measure(_rand(SHAPE, 6, batch=1), 0.1)
    with pytest.raises(ValueError, match="'pigdm'"):
        run_deepinv("pigdm", _gaussian_prior(), op, y, 0.1, nfe=3)
    with pytest.raises(ValueError, match="shape"):
        run_deepinv("dps", _gaussian_prior(), op, y[:, :3], 0.1, nfe=3)
    with pytest.raises(ValueError, match="even, got 3"):
        run_deepinv("dps", _gaussian_prior(), op, y, 0.1, nfe=3)
    with pytest.raises(ValueError, match="sigma_y"):
        run_deepinv("dps", _gaussian_prior(), op, y, -0.1, nfe=3)
    with pytest.raises(ValueError, match="3 seeds"):
        run_deepinv("dps", _gaussian_prior(), op, y.expand(2, -1), 0.1, nfe=3, seeds=[0, 1, 2])
    with pytest.raises(TypeError, match="Operator"):
        run_deepinv("dps", _gaussian_prior(), "inpainting", y, 0.1, nfe=3)


def test_non_image_priors_are_refused():
    """deepinv's samplers take images (C, H, W): the exact 2-D mixtures are not applicable."""
    gmm = diffsolve.exact_model("gmm-2d")
    op = Denoising((2,))
    with pytest.raises(ValueError, match=r"images \(C, H, W\)"):
        run_deepinv("dps", gmm, op, torch.zeros(1, 2, dtype=F64), 0.1, nfe=3)
