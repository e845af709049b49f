"""The problems of the inverse-problem benchmark: exact mixture problems (with their exact
posterior) and the MNIST tasks, each built from its name, seeded and deterministic.

Exact problems (``sigma_y`` in the mixture's own data units; the truth x* is one seeded prior
draw and ``y = A x* + sigma_y n``):

* ``gmm-2d``: the 8-mode circle, A = [[0.6, 0.8]] (a 1 x 2 LinearOperator), sigma_y = 0.2
  (two main posterior modes and two minor ones);
* ``gmm-64-inpaint``: gmm-64 (data scale ~0.5), half the coordinates observed (a seeded random
  half), sigma_y = 0.05;
* ``gmm-64-linear``: gmm-64, a random 8 x 64 Gaussian LinearOperator (entries N(0, 1/64)),
  sigma_y = 0.05;
* ``grid-D-yM``: MCGdiff's 25-component grid mixture in D dimensions (chi-squared weights, seed
  0) with M random measurements as MCGdiff draws them [MCGdiff App. B.3]: a Gaussian M x D matrix
  whose singular values are replaced by sorted U(0, 1) draws, sigma_y = U(0, 1) x max(sv); the
  defaults are grid-8-y1, grid-80-y2 and grid-800-y4.

MNIST tasks (images in [-1, 1]; sigma_y is given in [0, 1] pixel units and converted):
``inpaint-box`` (a centred 12 x 12 box missing), ``inpaint-random`` (70% of the pixels missing,
one seeded mask for all images), ``sr4`` (4x average pooling), ``blur`` (Gaussian, std 1.5,
9 x 9 kernel, circular) and ``denoise``.

    >>> p = exact_problem("gmm-2d")
    >>> p.name, tuple(p.y.shape), p.sigma_y, round(float(p.posterior.weights.max()), 3)
    ('gmm-2d', (1, 1), 0.2, 0.538)
    >>> parse_grid("grid-80-y2")
    (80, 2)
    >>> mnist_operator("sr4").out_shape
    (1, 7, 7)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from ..inverse import Denoising, GaussianBlur, Inpainting, LinearOperator, Operator, SuperResolution
from ..models.gmm import GaussianMixture, builtin, grid_mixture

__all__ = ["ExactProblem", "exact_problem", "EXACT_PROBLEMS", "DEFAULT_EXACT_PROBLEMS", "parse_grid",
           "check_exact_problem", "MNIST_TASKS", "MNIST_SHAPE", "mnist_operator", "task_description"]

F64 = torch.float64
DEFAULT_EXACT_PROBLEMS = ("gmm-2d", "gmm-64-inpaint", "gmm-64-linear", "grid-8-y1", "grid-80-y2", "grid-800-y4")
_GRID = re.compile(r"grid-(\d+)-y(\d+)")
#: the grid problems' sizes the benchmark accepts
GRID_DIMS, GRID_MEASUREMENTS = (2, 4096), (1, 16)


@dataclass(frozen=True)
class ExactProblem:
    """A mixture prior, an operator, one measurement ``y`` (1, *out_shape), ``sigma_y`` (data
    units), the truth it was measured from and the exact posterior."""

    name: str
    prior: GaussianMixture
    operator: Operator
    y: Tensor
    sigma_y: float
    truth: Tensor
    description: str
    posterior: Any = None

    def __post_init__(self):
        if self.posterior is None:
            object.__setattr__(self, "posterior", self.prior.posterior(self.operator, self.y, self.sigma_y))


def _measured(name: str, prior: GaussianMixture, op: Operator, sigma_y: float, seed: int, what: str) -> ExactProblem:
    g = torch.Generator().manual_seed(seed)
    truth = prior.sample(1, generator=g)
    y = op.forward(truth) + sigma_y * torch.randn(1, *op.out_shape, dtype=F64, generator=g)
    return ExactProblem(name, prior, op, y, float(sigma_y), truth, what)


def _gmm_2d() -> ExactProblem:
    prior = builtin("gmm-2d")
    op = LinearOperator(torch.tensor([[0.6, 0.8]], dtype=F64), (2,))
    return ExactProblem("gmm-2d", prior, op, torch.tensor([[0.3]], dtype=F64), 0.2, torch.zeros(1, 2, dtype=F64),
                        "gmm-2d, A = [0.6, 0.8] (1x2), y = 0.3, sigma_y = 0.2")


def _gmm_64_inpaint() -> ExactProblem:
    mask = torch.zeros(64)
    mask[torch.randperm(64, generator=torch.Generator().manual_seed(64))[:32]] = 1
    return _measured("gmm-64-inpaint", builtin("gmm-64"), Inpainting(mask), 0.05, 1,
                     "gmm-64, 32 of 64 coordinates observed (seeded), sigma_y = 0.05")


def _gmm_64_linear() -> ExactProblem:
    A = torch.randn(8, 64, dtype=F64, generator=torch.Generator().manual_seed(8)) / 8.0
    return _measured("gmm-64-linear", builtin("gmm-64"), LinearOperator(A, (64,)), 0.05, 2,
                     "gmm-64, random 8x64 Gaussian A (entries N(0, 1/64)), sigma_y = 0.05")


def parse_grid(name: str) -> tuple[int, int] | None:
    """(dim, measurements) of a ``grid-D-yM`` name, None for other names."""
    m = _GRID.fullmatch(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _grid(name: str, dim: int, dy: int) -> ExactProblem:
    """[MCGdiff App. B.3]: A Gaussian with sorted U(0, 1) singular values, sigma_y = U(0, 1) max(sv)."""
    g = torch.Generator().manual_seed(1000 * dim + dy)
    G = torch.randn(dy, dim, dtype=F64, generator=g)
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    sv = torch.rand(dy, dtype=F64, generator=g).sort(descending=True).values
    A = U @ torch.diag(sv) @ Vh
    sigma_y = float(torch.rand(1, dtype=F64, generator=g)) * float(sv.max())
    prior = grid_mixture(dim, weights="chi2", seed=0)
    return _measured(name, prior, LinearOperator(A, (dim,)), sigma_y, dim + dy,
                     f"grid mixture (25 components, chi2 weights) in {dim}-D, {dy} random measurement"
                     f"{'s' if dy > 1 else ''} (MCGdiff), sigma_y = {sigma_y:.3g}")


EXACT_PROBLEMS: dict[str, Callable[[], ExactProblem]] = {
    "gmm-2d": _gmm_2d, "gmm-64-inpaint": _gmm_64_inpaint, "gmm-64-linear": _gmm_64_linear,
}


def check_exact_problem(name: str) -> str:
    """``name`` if it names an exact problem (a fixed one, or ``grid-D-yM``), else a ValueError
    naming the accepted ones."""
    if name in EXACT_PROBLEMS:
        return name
    g = parse_grid(name) if isinstance(name, str) else None
    if g and GRID_DIMS[0] <= g[0] <= GRID_DIMS[1] and GRID_MEASUREMENTS[0] <= g[1] <= min(g[0], GRID_MEASUREMENTS[1]):
        return name
    raise ValueError(f"unknown exact problem {name!r}; accepted: {', '.join(EXACT_PROBLEMS)}, grid-D-yM "
                     f"(D in [{GRID_DIMS[0]}, {GRID_DIMS[1]}] dimensions, M in [1, min(D, {GRID_MEASUREMENTS[1]})] "
                     "measurements, e.g. grid-80-y2)")


_BUILT: dict[str, ExactProblem] = {}


def exact_problem(name: str) -> ExactProblem:
    """The exact problem ``name`` (built once per process)."""
    check_exact_problem(name)
    if name not in _BUILT:
        g = parse_grid(name)
        _BUILT[name] = EXACT_PROBLEMS[name]() if g is None else _grid(name, *g)
    return _BUILT[name]


# -- MNIST tasks --------------------------------------------------------------------------------
MNIST_SHAPE = (1, 28, 28)
_TASKS: dict[str, tuple[str, Callable[[], Operator]]] = {
    "inpaint-box": ("a centred 12x12 box missing", lambda: Inpainting(_box_mask())),
    "inpaint-random": ("70% of the pixels missing at random (one seeded mask)", lambda: Inpainting(_random_mask())),
    "sr4": ("4x super-resolution (average pooling to 7x7)", lambda: SuperResolution(4, MNIST_SHAPE)),
    "blur": ("Gaussian blur, std 1.5 px, 9x9 kernel (circular)", lambda: GaussianBlur(1.5, 9, MNIST_SHAPE)),
    "denoise": ("denoising (A = I)", lambda: Denoising(MNIST_SHAPE)),
}
MNIST_TASKS = tuple(_TASKS)


def _box_mask() -> Tensor:
    m = torch.ones(MNIST_SHAPE)
    m[:, 8:20, 8:20] = 0
    return m


def _random_mask(missing: float = 0.7, seed: int = 0) -> Tensor:
    u = torch.rand(MNIST_SHAPE, generator=torch.Generator().manual_seed(seed))
    return (u >= missing).to(torch.float32)


def mnist_operator(task: str) -> Operator:
    """The operator of an MNIST task (see the module docstring)."""
    if task not in _TASKS:
        raise ValueError(f"unknown task {task!r}; accepted: {', '.join(MNIST_TASKS)}")
    return _TASKS[task][1]()


def task_description(task: str) -> str:
    mnist_operator(task)
    return _TASKS[task][0]
