"""Linear measurement operators: y = A x + sigma_y n, n ~ N(0, I).

Every operator maps a batch x of shape (B, *in_shape) to (B, *out_shape) and gives

* ``forward(x)`` (A x) and ``adjoint(y)`` (A^T y);
* ``svd()``: the singular value decomposition A = U diag(sv) V^T as an :class:`SVD` of
  functions (never a matrix where the structure allows: masks, pooling, FFT-diagonal blur),
  or None where the operator has none (methods that need it, DDRM, DDNM, PiGDM, refuse it);
* ``pinv(y)``: the pseudo-inverse A^+ y = V diag(1/sv) U^T y (from the SVD);
* ``measure(x, sigma_y, seeds)``: A x plus seeded Gaussian noise (per-sample seeds, as the
  samplers' noise: a measurement does not change with the batch around it).

Operators: :class:`Denoising` (A = I), :class:`Inpainting` (observed entries, A A^T = I),
:class:`SuperResolution` (average pooling, blockwise Householder SVD), :class:`GaussianBlur`
(circular, real Fourier SVD) and the dense :class:`LinearOperator`. Their ``name`` picks the
methods' per-family defaults: "denoising", "inpainting", "super-resolution", "blur".

Units: ``x`` and ``sigma_y`` are in the prior's own data range (for the shipped image models,
[-1, 1]: a noise of 0.05 in [0, 1] pixel units is ``sigma_y = 0.1`` there; see
:func:`sigma_in_model_units`).

    >>> import torch
    >>> A = LinearOperator(torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64), (3,))
    >>> x = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    >>> A(x).tolist(), A.adjoint(A(x)).tolist()
    ([[3.0]], [[3.0, 3.0, 0.0]])
    >>> A.pinv(A(x)).round(decimals=12).tolist()               # the minimum-norm solution
    [[1.5, 1.5, 0.0]]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from ..checks import check_number
from ..noise import NoiseSource

__all__ = ["Operator", "SVD", "LinearOperator", "Denoising", "Inpainting", "SuperResolution", "GaussianBlur",
           "sigma_in_model_units"]

#: the NoiseSource step used for measurement noise (apart from every sampler's steps >= -1)
MEASUREMENT_STEP = -2


def sigma_in_model_units(sigma: float, value_range: tuple[float, float], pixel_range: tuple[float, float] = (0.0, 1.0)) -> float:
    """A noise level given in ``pixel_range`` units (the papers' [0, 1]) in the model's
    ``value_range`` units (the shipped image models use [-1, 1]: factor 2).

    >>> sigma_in_model_units(0.05, (-1.0, 1.0))
    0.1
    """
    return float(sigma) * (value_range[1] - value_range[0]) / (pixel_range[1] - pixel_range[0])


@dataclass(frozen=True)
class SVD:
    """A = U diag(sv) V^T given by functions on batches.

    sv: the r non-zero singular values (r <= min(n_in, n_out)), a (r,) float64 tensor.
    Vt: x (B, *in_shape) -> (B, n_in) spectral coordinates; the first r go with ``sv``.
    V: (B, n_in) -> (B, *in_shape), the inverse of Vt (V is orthogonal).
    Ut: y (B, *out_shape) -> (B, r); U: (B, r) -> (B, *out_shape) (on the range of A).
    """

    sv: Tensor
    Vt: Callable[[Tensor], Tensor]
    V: Callable[[Tensor], Tensor]
    Ut: Callable[[Tensor], Tensor]
    U: Callable[[Tensor], Tensor]

    @property
    def rank(self) -> int:
        return int(self.sv.numel())

    def pinv_coordinates(self, y: Tensor, n: int, damping: float = 0.0) -> Tensor:
        """V^T A^+ y, (B, n): U^T y divided by the singular values (multiplied by
        sv / (sv^2 + damping) when ``damping`` > 0), zero on the null space."""
        sv = self.sv.to(y)
        z = self.Ut(y) * (sv / (sv * sv + damping)) if damping > 0 else self.Ut(y) / sv
        out = torch.zeros(y.shape[0], n, dtype=y.dtype, device=y.device)
        out[:, : self.rank] = z
        return out


class Operator:
    """Base class: subclasses set ``in_shape`` / ``out_shape`` and implement ``_forward`` and
    ``_adjoint`` on batches of those shapes (and ``svd`` where the structure allows)."""

    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    name: str = "operator"

    def _forward(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _adjoint(self, y: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check(self, v: Tensor, shape: tuple[int, ...], what: str) -> None:
        if not isinstance(v, Tensor) or tuple(v.shape[1:]) != tuple(shape) or v.ndim != len(shape) + 1:
            got = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
            raise ValueError(f"{self.name}: {what} must have shape (batch, {', '.join(map(str, shape))}), got {got}")

    def forward(self, x: Tensor) -> Tensor:
        """A x for x of shape (B, *in_shape)."""
        self._check(x, self.in_shape, "x")
        return self._forward(x)

    __call__ = forward

    def adjoint(self, y: Tensor) -> Tensor:
        """A^T y for y of shape (B, *out_shape)."""
        self._check(y, self.out_shape, "y")
        return self._adjoint(y)

    def svd(self) -> SVD | None:
        """The SVD of A as functions, or None where the operator has none."""
        return None

    def require_svd(self, method: str) -> SVD:
        """The SVD, or a clear refusal naming the method that needs it."""
        s = self.svd()
        if s is None:
            raise ValueError(f"method {method!r} needs the operator's SVD, which {self.name} does not provide; "
                             f"use a method that needs only forward/adjoint (dps, diffpir, daps, red-diff)")
        return s

    def pinv(self, y: Tensor, damping: float = 0.0) -> Tensor:
        """A^+ y = V diag(1/sv) U^T y (the minimum-norm least-squares solution).  With
        ``damping`` = lam > 0 the Tikhonov-regularised inverse V diag(sv / (sv^2 + lam)) U^T y:
        the minimiser of |A x - y|^2 + lam |x|^2, which does not amplify the noise of a measurement
        through small singular values (lam = sigma_y^2 for a noisy one)."""
        self._check(y, self.out_shape, "y")
        damping = check_number(self.name, "damping", damping, 0)
        s = self.require_svd("pinv")
        return s.V(s.pinv_coordinates(y, math.prod(self.in_shape), damping))

    def measure(self, x: Tensor, sigma_y: float, seeds: Sequence[int] | None = None) -> Tensor:
        """A x + sigma_y n with per-sample seeded noise n (``seeds``: one per row, default 0..B-1).
        ``sigma_y`` is in the data's own units (see the module docstring)."""
        sigma_y = check_number(self.name, "sigma_y", sigma_y, 0)
        y = self.forward(x)
        if sigma_y == 0:
            return y
        seeds = list(range(x.shape[0])) if seeds is None else list(seeds)
        return y + sigma_y * NoiseSource(seeds).normal(MEASUREMENT_STEP, y)

    def matrix(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """The dense (n_out, n_in) matrix (forward applied to the identity: small problems only)."""
        n_in = math.prod(self.in_shape)
        eye = torch.eye(n_in, dtype=dtype).reshape(n_in, *self.in_shape)
        return self.forward(eye).reshape(n_in, -1).T.contiguous()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(in={self.in_shape}, out={self.out_shape})"


class LinearOperator(Operator):
    """A dense matrix (m, n) acting on x of shape ``shape`` (n elements): for small problems and
    tests. Its SVD is computed once (torch.linalg.svd); singular values below ``rtol`` times the
    largest count as zero."""

    name = "LinearOperator"

    def __init__(self, matrix: Tensor, shape: Sequence[int], rtol: float = 1e-10):
        M = torch.as_tensor(matrix, dtype=torch.float64)
        if M.ndim != 2:
            raise ValueError(f"LinearOperator: matrix must be 2-D (m, n), got shape {tuple(M.shape)}")
        self.in_shape = tuple(int(v) for v in shape)
        if math.prod(self.in_shape) != M.shape[1]:
            raise ValueError(f"LinearOperator: shape {self.in_shape} has {math.prod(self.in_shape)} elements, "
                             f"the matrix has {M.shape[1]} columns")
        if not bool(torch.isfinite(M).all()):
            raise ValueError("LinearOperator: matrix contains NaN or inf")
        self.M, self.out_shape, self.rtol = M, (M.shape[0],), float(rtol)
        self._svd: SVD | None = None

    def _forward(self, x):
        return x.reshape(x.shape[0], -1) @ self.M.to(x.dtype).T

    def _adjoint(self, y):
        return (y @ self.M.to(y.dtype)).reshape(y.shape[0], *self.in_shape)

    def svd(self) -> SVD:
        if self._svd is None:
            U, S, Vh = torch.linalg.svd(self.M, full_matrices=True)
            r = int((S > self.rtol * S.max()).sum()) if S.numel() else 0
            Ur, sv = U[:, :r], S[:r]
            shape = self.in_shape
            self._svd = SVD(
                sv=sv,
                Vt=lambda x: x.reshape(x.shape[0], -1) @ Vh.to(x.dtype).T,
                V=lambda z: (z @ Vh.to(z.dtype)).reshape(z.shape[0], *shape),
                Ut=lambda y: y @ Ur.to(y.dtype),
                U=lambda z: z @ Ur.to(z.dtype).T,
            )
        return self._svd


# -- structured operators: SVDs as functions, never a dense matrix -------------------------

def _flat_svd(shape_out: tuple[int, ...], sv: Tensor, to_spec: Callable[[Tensor], Tensor],
              from_spec: Callable[[Tensor], Tensor]) -> SVD:
    """An SVD whose U is the identity on the flattened measurement (Ut y = y.flatten(), r = n_out):
    A = diag(sv) in the spectral coordinates ``to_spec`` (orthogonal, (B, *shape_in) -> (B, n))."""
    return SVD(sv=sv, Vt=to_spec, V=from_spec, Ut=lambda y: y.reshape(y.shape[0], -1),
               U=lambda z: z.reshape(z.shape[0], *shape_out))


class Denoising(Operator):
    """A = I on data of shape ``shape``: y = x + sigma_y n, with ``sigma_y`` in the prior's data
    units (the shipped image models: [-1, 1]). Its SVD is the identity (sv = 1).

    >>> import torch
    >>> A = Denoising((2, 2))
    >>> A.svd().sv.tolist(), A.pinv(torch.ones(1, 2, 2)).shape
    ([1.0, 1.0, 1.0, 1.0], torch.Size([1, 2, 2]))
    """

    name = "denoising"

    def __init__(self, shape: Sequence[int]):
        self.in_shape = self.out_shape = _shape("Denoising", shape)

    def _forward(self, x):
        return x

    def _adjoint(self, y):
        return y

    def svd(self) -> SVD:
        n, shape = math.prod(self.in_shape), self.in_shape
        return _flat_svd(shape, torch.ones(n, dtype=torch.float64),
                         lambda x: x.reshape(x.shape[0], -1), lambda z: z.reshape(z.shape[0], *shape))


class Inpainting(Operator):
    """Observe the entries where ``mask`` is 1: y = x[mask] + sigma_y n (``sigma_y`` in the prior's
    data units, e.g. [-1, 1] for the shipped image models).

    The measurement is the flat vector of observed entries (out_shape = (m,), in row-major order
    of the mask), so that A A^T = I and the SVD is a permutation: sv = 1 (m of them),
    Vt x = (observed entries, then missing entries), U = I. ``adjoint(y)`` is the zero-filled
    image. ``mask`` has the data's shape, or broadcasts to ``shape`` (e.g. an (H, W) mask for
    (C, H, W) images).

    >>> import torch
    >>> A = Inpainting(torch.tensor([1, 0, 1]))
    >>> x = torch.tensor([[1.0, 2.0, 3.0]])
    >>> A(x).tolist(), A.adjoint(A(x)).tolist(), A.out_shape
    ([[1.0, 3.0]], [[1.0, 0.0, 3.0]], (2,))
    """

    name = "inpainting"

    def __init__(self, mask: Tensor, shape: Sequence[int] | None = None):
        mask = torch.as_tensor(mask)
        if mask.is_complex() or not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("Inpainting: mask must hold only 0 (missing) and 1 (observed)")
        if shape is not None:
            shape = _shape("Inpainting", shape)
            try:
                mask = mask.expand(shape)
            except RuntimeError:
                raise ValueError(f"Inpainting: mask of shape {tuple(mask.shape)} does not broadcast "
                                 f"to {shape}") from None
        self.mask = mask.bool().contiguous()
        self.in_shape = tuple(self.mask.shape)
        flat = self.mask.reshape(-1)
        self.observed = torch.nonzero(flat).reshape(-1)
        self.missing = torch.nonzero(~flat).reshape(-1)
        if self.observed.numel() == 0:
            raise ValueError("Inpainting: the mask observes no entry")
        self.out_shape = (int(self.observed.numel()),)
        self._order = torch.cat([self.observed, self.missing])  # Vt: observed first

    def _forward(self, x):
        return x.reshape(x.shape[0], -1)[:, self.observed.to(x.device)]

    def _adjoint(self, y):
        out = y.new_zeros(y.shape[0], math.prod(self.in_shape))
        out[:, self.observed.to(y.device)] = y
        return out.reshape(y.shape[0], *self.in_shape)

    def svd(self) -> SVD:
        order, shape = self._order, self.in_shape

        def V(z):
            out = torch.empty_like(z)
            out[:, order.to(z.device)] = z
            return out.reshape(z.shape[0], *shape)

        return _flat_svd(self.out_shape, torch.ones(self.out_shape[0], dtype=torch.float64),
                         lambda x: x.reshape(x.shape[0], -1)[:, order.to(x.device)], V)


def _shape(who: str, shape: Sequence[int]) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in shape)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: shape must be a sequence of positive integers, got {shape!r}") from None
    if not out or any(v < 1 for v in out):
        raise ValueError(f"{who}: shape must be a sequence of positive integers, got {shape!r}")
    return out


def _image_shape(who: str, shape: Sequence[int]) -> tuple[int, ...]:
    """A data shape (..., H, W) with at least the two spatial axes."""
    shape = _shape(who, shape)
    if len(shape) < 2:
        raise ValueError(f"{who}: shape must end with the two spatial axes (..., H, W), got {shape}")
    return shape


class SuperResolution(Operator):
    """Average pooling of ``factor`` x ``factor`` blocks of images of shape (..., H, W) (H and W
    multiples of ``factor``): y = pool(x) + sigma_y n, ``sigma_y`` in the prior's data units
    (e.g. [-1, 1] for the shipped image models). out_shape = (..., H / factor, W / factor).

    SVD, block by block [DDRM App. (super-resolution)]: the block mean is (1/f) e^T x_block with
    e = 1/f (the normalised all-ones vector of f^2 entries), so sv = 1/f for every output pixel
    and U = I. V completes e to an orthonormal basis of each block with the Householder
    reflection Q = I - 2 w w^T / |w|^2, w = e_1 - e (Q e_1 = e): Vt x = (e^T x_block for every
    block in output order, then the other f^2 - 1 coordinates Q x_block[1:] of every block).

    >>> import torch
    >>> A = SuperResolution(2, (2, 4))
    >>> A(torch.arange(8.0).reshape(1, 2, 4)).tolist()
    [[[2.5, 4.5]]]
    >>> A.svd().sv.tolist()
    [0.5, 0.5]
    """

    name = "super-resolution"

    def __init__(self, factor: int, shape: Sequence[int]):
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
            raise ValueError(f"SuperResolution: factor must be a positive integer, got {factor!r}")
        shape = _image_shape("SuperResolution", shape)
        H, W = shape[-2:]
        if H % factor or W % factor:
            raise ValueError(f"SuperResolution: factor {factor} does not divide the image size {H}x{W}")
        self.factor, self.in_shape = factor, shape
        self.out_shape = (*shape[:-2], H // factor, W // factor)
        f2 = factor * factor
        e = torch.full((f2,), 1.0 / factor, dtype=torch.float64)
        w = -e
        w[0] += 1.0
        self._w = w / w.norm() if float(w.norm()) > 0 else w  # f = 1: Q = I

    def _blocks(self, x: Tensor) -> Tensor:
        """(B, ..., H, W) -> (B, ..., h, w, f*f)."""
        f, lead = self.factor, x.shape[:-2]
        h, w = x.shape[-2] // f, x.shape[-1] // f
        x = x.reshape(*lead, h, f, w, f).movedim(-3, -2)
        return x.reshape(*lead, h, w, f * f)

    def _unblocks(self, b: Tensor) -> Tensor:
        f, lead = self.factor, b.shape[:-3]
        h, w = b.shape[-3:-1]
        return b.reshape(*lead, h, w, f, f).movedim(-2, -3).reshape(*lead, h * f, w * f)

    def _reflect(self, b: Tensor) -> Tensor:
        w = self._w.to(device=b.device, dtype=b.dtype)
        return b - 2 * (b @ w)[..., None] * w

    def _forward(self, x):
        return self._blocks(x).mean(-1)

    def _adjoint(self, y):
        f2 = self.factor**2
        return self._unblocks(y[..., None].expand(*y.shape, f2) / f2)

    def svd(self) -> SVD:
        B_ = lambda t: t.shape[0]  # noqa: E731
        m, f2 = math.prod(self.out_shape), self.factor**2

        def Vt(x):
            q = self._reflect(self._blocks(x)).reshape(B_(x), m, f2)
            return torch.cat([q[:, :, 0], q[:, :, 1:].reshape(B_(x), -1)], 1)

        def V(z):
            q = torch.cat([z[:, :m, None], z[:, m:].reshape(B_(z), m, f2 - 1)], 2)
            return self._unblocks(self._reflect(q).reshape(B_(z), *self.out_shape, f2))

        sv = torch.full((m,), 1.0 / self.factor, dtype=torch.float64)
        return _flat_svd(self.out_shape, sv, Vt, V)


class GaussianBlur(Operator):
    """Circular convolution of images of shape (..., H, W) with a normalised Gaussian kernel of
    standard deviation ``sigma`` pixels on a ``kernel_size`` x ``kernel_size`` support (odd, at
    most H and W): y = k * x + sigma_y n, ``sigma_y`` in the prior's data units (e.g. [-1, 1]
    for the shipped image models). Each channel (leading axis) is blurred alike.

    The kernel is symmetric, so A is symmetric and diagonal in the 2-D DFT with real
    eigenvalues lam_k = lam_{-k} [DDRM App. (deblurring)]. The SVD is real: V is the real
    orthonormal Fourier basis (for a frequency pair {k, -k}: sqrt(2) Re and sqrt(2) Im of the
    unitary DFT coefficient; Re alone at self-conjugate frequencies), sv = |lam|, U = V
    diag(sign lam) on the kept coordinates, ordered by decreasing sv. Singular values below
    ``sv_rtol`` times the largest count as zero (the SVD then equals A up to that relative
    error; DDRM's code drops below 3e-2 for noisy deblurring).

    >>> import torch
    >>> A = GaussianBlur(1.0, 3, (4, 4))
    >>> x = torch.zeros(1, 4, 4); x[0, 0, 0] = 1.0
    >>> round(float(A(x).sum()), 6), A.svd().rank
    (1.0, 16)
    """

    name = "blur"

    def __init__(self, sigma: float, kernel_size: int, shape: Sequence[int], sv_rtol: float = 1e-6):
        sigma = check_number("GaussianBlur", "sigma", sigma, 0, low_open=True)
        sv_rtol = check_number("GaussianBlur", "sv_rtol", sv_rtol, 0, 1, high_open=True)
        shape = _image_shape("GaussianBlur", shape)
        H, W = shape[-2:]
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 \
                or kernel_size % 2 == 0 or kernel_size > min(H, W):
            raise ValueError(f"GaussianBlur: kernel_size must be an odd integer <= {min(H, W)}, got {kernel_size!r}")
        self.sigma, self.kernel_size, self.sv_rtol = sigma, kernel_size, float(sv_rtol)
        self.in_shape = self.out_shape = shape
        r = kernel_size // 2
        t = torch.arange(-r, r + 1, dtype=torch.float64)
        g = torch.exp(-t**2 / (2 * sigma**2))
        g = g / g.sum()
        self.kernel = torch.outer(g, g)
        k = torch.zeros(H, W, dtype=torch.float64)
        k[t.long()[:, None] % H, t.long()[None, :] % W] = self.kernel  # centred at (0, 0), wrapped
        self.eig = torch.fft.fft2(k).real  # symmetric kernel: a real spectrum (imaginary parts ~1e-17)
        self._svd: SVD | None = None

    def _filter(self, x: Tensor) -> Tensor:
        lam = self.eig.to(device=x.device, dtype=x.dtype)
        return torch.fft.ifft2(torch.fft.fft2(x) * lam).real

    _forward = _adjoint = _filter

    def _real_basis(self):
        """Index sets of the real Fourier basis: self-conjugate frequencies, and one
        representative of each pair {k, -k} with its partner (flat indices into H*W)."""
        H, W = self.in_shape[-2:]
        i, j = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
        flat, neg = (i * W + j).reshape(-1), (((-i) % H) * W + (-j) % W).reshape(-1)
        self_conj = torch.nonzero(flat == neg).reshape(-1)
        rep = torch.nonzero(flat < neg).reshape(-1)
        return self_conj, rep, neg[rep]

    def svd(self) -> SVD:
        if self._svd is None:
            self._svd = self._build_svd()
        return self._svd

    def _build_svd(self) -> SVD:
        H, W = self.in_shape[-2:]
        lead, C = self.in_shape[:-2], math.prod(self.in_shape[:-2])
        sc, rep, part = self._real_basis()
        lam = self.eig.reshape(-1)
        lam_coords = torch.cat([lam[sc], lam[rep], lam[rep]]).repeat(C)  # per channel, in _coords order
        order = torch.argsort(lam_coords.abs(), descending=True, stable=True)
        keep = int((lam_coords.abs() > self.sv_rtol * lam_coords.abs().max()).sum())
        sv, sign = lam_coords[order].abs()[:keep], torch.sign(lam_coords[order])[:keep]
        n, r2 = C * H * W, math.sqrt(2.0)

        def coords(x):  # (B, ..., H, W) -> (B, n) real Fourier coordinates, channel-major
            X = torch.fft.fft2(x, norm="ortho").reshape(x.shape[0], C, H * W)
            i_sc, i_rep = sc.to(x.device), rep.to(x.device)
            c = torch.cat([X[..., i_sc].real, r2 * X[..., i_rep].real, r2 * X[..., i_rep].imag], -1)
            return c.reshape(x.shape[0], n)

        def uncoords(z):
            z = z.reshape(z.shape[0], C, H * W)
            a, b = z[..., len(sc): len(sc) + len(rep)], z[..., len(sc) + len(rep):]
            cdt = torch.complex128 if z.dtype == torch.float64 else torch.complex64
            X = torch.zeros(z.shape[0], C, H * W, dtype=cdt, device=z.device)
            dev = z.device
            X[..., sc.to(dev)] = z[..., : len(sc)].to(X.dtype)
            X[..., rep.to(dev)] = torch.complex(a, b) / r2
            X[..., part.to(dev)] = torch.complex(a, -b) / r2
            return torch.fft.ifft2(X.reshape(z.shape[0], *lead, H, W), norm="ortho").real

        def Vt(x):
            return coords(x)[:, order.to(x.device)]

        def V(z):
            out = torch.empty_like(z)
            out[:, order.to(z.device)] = z
            return uncoords(out)

        def Ut(y):
            return Vt(y)[:, :keep] * sign.to(device=y.device, dtype=y.dtype)

        def U(z):
            full = z.new_zeros(z.shape[0], n)
            full[:, :keep] = z * sign.to(device=z.device, dtype=z.dtype)
            return V(full)

        return SVD(sv=sv, Vt=Vt, V=V, Ut=Ut, U=U)
