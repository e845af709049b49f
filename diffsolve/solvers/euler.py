"""First-order deterministic step: DDIM (Song et al. 2021, eq. 12 with eta = 0), and the base of
every single-step method.

In canonical space DDIM, Euler on the probability-flow ODE dy/ds = (y - D)/s (Karras et al.
2022, Alg. 1 without the Heun correction) and first-order DPM-Solver / DPM-Solver++ (Lu et
al. 2022, eq. 3.7 with k = 1) are one and the same update:

    y_{i+1} = D_i + (s_{i+1} / s_i) (y_i - D_i),    D_i = D(y_i, s_i)           [DDIM Eq. 12]

which lands on y_{i+1} = D_i when s_{i+1} = 0.
"""

from __future__ import annotations

from torch import Tensor

from .base import Solver, SolverState, register
from .kit import bc

__all__ = ["ddim_update", "DDIM", "SingleStepSolver"]


def ddim_update(y: Tensor, d: Tensor, s: float, s_next: float) -> Tensor:
    """The exact first-order exponential-integrator step from level s to s_next >= 0
    [DDIM Eq. 12] [DPM-Solver Eq. 3.7, k = 1]."""
    return d + bc(s_next / s, y) * (y - d)


@register
class DDIM(Solver):
    name = "ddim"
    aliases = ("euler", "dpm-solver-1", "dpm++1")
    order = 1
    paper = "Denoising Diffusion Implicit Models (Song et al. 2021), eq. 12, eta=0"

    def step(self, state: SolverState, denoise) -> SolverState:
        s, s_next = state.s, state.s_next
        d = denoise(state.y, s)
        return state.replace(y=ddim_update(state.y, d, s, s_next), i=state.i + 1, x0=d)


class SingleStepSolver(Solver):
    """A method whose step needs only the current state (Heun, RK4, DPM-Solver-k, ...).

    The step makes the first evaluation ``d0 = D(y_i, s_i)`` itself (it is the state's x0-hat)
    and hands it to the subclass's ``update(y, s, s_next, d0, denoise)`` for ``s_next > 0``; the
    step to s = 0 is the shared first-order limit ``y = D(y, s)`` (one evaluation), so that rule
    lives here once.
    """

    def update(self, y: Tensor, s: float, s_next: float, d0: Tensor, denoise) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def step(self, state: SolverState, denoise) -> SolverState:
        y, s, s_next = state.y, state.s, state.s_next
        d0 = denoise(y, s)
        y = ddim_update(y, d0, s, s_next) if s_next == 0 else self.update(y, s, s_next, d0, denoise)
        return state.replace(y=y, i=state.i + 1, x0=d0)
