"""Structured measurement operators against their dense matrices: forward, adjoint, pinv, the
SVD (reconstruction, orthogonality, singular values) and seeded measurements."""

import math

import pytest
import torch

from diffsolve.inverse import Denoising, GaussianBlur, Inpainting, LinearOperator, SuperResolution

F64 = torch.float64


def _mask():
    g = torch.Generator().manual_seed(3)
    return (torch.rand(2, 4, 6, generator=g) < 0.6).to(F64)


OPERATORS = {
    "denoising": lambda: Denoising((2, 3, 4)),
    "inpainting": lambda: Inpainting(_mask()),
    "inpainting-broadcast": lambda: Inpainting(torch.tensor([[1, 0, 1], [0, 1, 1]]), shape=(2, 2, 3)),
    "sr2": lambda: SuperResolution(2, (2, 4, 6)),
    "sr3": lambda: SuperResolution(3, (6, 3)),
    "blur-even": lambda: GaussianBlur(1.2, 3, (2, 4, 6)),
    "blur-odd": lambda: GaussianBlur(0.8, 5, (5, 7), sv_rtol=1e-12),
    "dense": lambda: LinearOperator(torch.randn(3, 5, dtype=F64, generator=torch.Generator().manual_seed(1)), (5,)),
}


@pytest.fixture(params=list(OPERATORS))
def op(request):
    return OPERATORS[request.param]()


def _rand(shape, seed, batch=3):
    return torch.randn(batch, *shape, dtype=F64, generator=torch.Generator().manual_seed(seed))


def test_forward_and_adjoint_match_the_dense_matrix(op):
    M = op.matrix()
    x, y = _rand(op.in_shape, 0), _rand(op.out_shape, 1)
    assert torch.allclose(op(x).reshape(3, -1), x.reshape(3, -1) @ M.T, atol=1e-12)
    assert torch.allclose(op.adjoint(y).reshape(3, -1), y.reshape(3, -1) @ M, atol=1e-12)
    # <A x, y> = <x, A^T y>
    assert torch.allclose((op(x) * y).flatten(1).sum(1), (x * op.adjoint(y)).flatten(1).sum(1), atol=1e-12)


def test_pinv_matches_the_dense_pseudo_inverse(op):
    M = op.matrix()
    y = _rand(op.out_shape, 2)
    ref = y.reshape(3, -1) @ torch.linalg.pinv(M, rtol=1e-9).T
    assert torch.allclose(op.pinv(y).reshape(3, -1), ref, atol=1e-9)


def test_svd_reconstructs_a_with_an_orthogonal_v(op):
    s, M = op.svd(), op.matrix()
    n = math.prod(op.in_shape)
    x = _rand(op.in_shape, 4)
    z = s.Vt(x)
    assert z.shape == (3, n)
    assert torch.allclose(s.V(z), x, atol=1e-12)                      # V Vt = I
    assert torch.allclose(z.norm(dim=1), x.flatten(1).norm(dim=1), atol=1e-12)  # norms kept
    # V^T V = I too: the columns V e_i are orthonormal
    cols = s.V(torch.eye(n, dtype=F64)).reshape(n, n)
    assert torch.allclose(cols @ cols.T, torch.eye(n, dtype=F64), atol=1e-12)
    # A x = U diag(sv) (V^T x)[:r]
    Ax = s.U(z[:, : s.rank] * s.sv)
    assert torch.allclose(Ax, op(x), atol=1e-12)
    # U^T U = I on the range and the singular values are those of the dense matrix
    r = s.rank
    Ucols = s.U(torch.eye(r, dtype=F64)).reshape(r, -1)
    assert torch.allclose(Ucols @ Ucols.T, torch.eye(r, dtype=F64), atol=1e-12)
    ref = torch.linalg.svdvals(M)
    assert torch.allclose(s.sv.sort(descending=True).values, ref[:r], atol=1e-12)
    assert bool((ref[r:] <= 1e-6 * ref[0]).all())


def test_measure_is_seeded_per_sample(op):
    x = _rand(op.in_shape, 5, batch=4)
    full = op.measure(x, 0.3, seeds=[10, 11, 12, 13])
    part = op.measure(x[2:3], 0.3, seeds=[12])
    assert torch.equal(full[2:3], part)
    assert full.shape == (4, *op.out_shape)
    noise = (full - op(x)) / 0.3
    assert 0.3 < float(noise.std()) < 2.0
    assert torch.equal(op.measure(x, 0.0), op(x))
    assert not torch.equal(op.measure(x, 0.3, seeds=[0, 1, 2, 3]), full)


def test_names_pick_the_method_defaults():
    names = {k: OPERATORS[k]().name for k in ("denoising", "inpainting", "sr2", "blur-even")}
    assert names == {"denoising": "denoising", "inpainting": "inpainting", "sr2": "super-resolution",
                     "blur-even": "blur"}


def test_super_resolution_changes_the_size_and_averages_blocks():
    A = SuperResolution(4, (1, 8, 12))
    x = _rand((1, 8, 12), 6, batch=2)
    assert A.out_shape == (1, 2, 3)
    assert torch.allclose(A(x)[0, 0, 1, 2], x[0, 0, 4:8, 8:12].mean())
    assert torch.allclose(A.svd().sv, torch.full((6,), 0.25, dtype=F64))
    assert torch.allclose(A(A.pinv(A(x))), A(x), atol=1e-12)          # A A^+ = I on the range


def test_blur_is_a_normalised_circular_gaussian():
    A = GaussianBlur(1.0, 5, (8, 8))
    x = torch.zeros(1, 8, 8, dtype=F64)
    x[0, 0, 0] = 1.0
    y = A(x)[0]
    assert abs(float(y.sum()) - 1.0) < 1e-12                         # normalised kernel
    assert torch.allclose(y[0, 1], y[0, -1]) and torch.allclose(y[1, 0], y[-1, 0])  # wraps around
    assert torch.allclose(y[0, 1] / y[0, 0], torch.tensor(math.exp(-0.5), dtype=F64))
    assert float(y[0, 3]) == pytest.approx(0.0, abs=1e-15)           # outside the 5x5 support


def test_blur_threshold_drops_small_singular_values():
    loose, tight = GaussianBlur(2.0, 7, (8, 8), sv_rtol=1e-2), GaussianBlur(2.0, 7, (8, 8), sv_rtol=1e-12)
    assert loose.svd().rank < tight.svd().rank
    assert float(loose.svd().sv.min()) >= 1e-2 * float(loose.svd().sv.max())


@pytest.mark.parametrize("make, match", [
    (lambda: Inpainting(torch.tensor([0.5, 1.0])), "only 0"),
    (lambda: Inpainting(torch.zeros(3)), "no entry"),
    (lambda: Inpainting(torch.ones(3), shape=(2, 4)), "broadcast"),
    (lambda: SuperResolution(3, (4, 6)), "does not divide"),
    (lambda: SuperResolution(0, (4, 4)), "factor"),
    (lambda: GaussianBlur(1.0, 4, (8, 8)), "kernel_size"),
    (lambda: GaussianBlur(1.0, 9, (8, 8)), "kernel_size"),
    (lambda: GaussianBlur(-1.0, 3, (8, 8)), "sigma"),
    (lambda: GaussianBlur(1.0, 3, (8,)), "spatial"),
])
def test_bad_arguments_are_refused_by_name(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_wrong_shapes_are_refused():
    A = SuperResolution(2, (4, 4))
    with pytest.raises(ValueError, match="super-resolution: x must have shape"):
        A(torch.zeros(1, 4, 5))
    with pytest.raises(ValueError, match="y must have shape"):
        A.adjoint(torch.zeros(1, 4, 4))


def test_damped_pinv_is_the_tikhonov_solution():
    """pinv(y, damping=lam) = argmin |A x - y|^2 + lam |x|^2 = (A^T A + lam I)^-1 A^T y, and it does
    not amplify noise through small singular values as the plain pinv does."""
    from diffsolve.inverse import GaussianBlur

    op = GaussianBlur(1.5, 5, (1, 8, 8))
    A = op.matrix()
    y = torch.randn(2, *op.out_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    lam = 0.01
    want = torch.linalg.solve(A.T @ A + lam * torch.eye(A.shape[1], dtype=torch.float64), A.T @ y.reshape(2, -1).T).T
    torch.testing.assert_close(op.pinv(y, damping=lam).reshape(2, -1), want, rtol=1e-9, atol=1e-9)
    assert float(op.pinv(y, damping=lam).abs().max()) < float(op.pinv(y).abs().max()) / 10
