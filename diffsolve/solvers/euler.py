"""First-order deterministic step: DDIM (Song et al. 2021, eq. 12 with eta = 0).

In canonical space DDIM, Euler on the probability-flow ODE dy/ds = (y - D)/s (Karras et al.
2022, Alg. 1 without the Heun correction) and first-order DPM-Solver / DPM-Solver++ (Lu et
al. 2022, eq. 3.7 with k = 1) are one and the same update:

    y_{i+1} = D_i + (s_{i+1} / s_i) (y_i - D_i),    D_i = D(y_i, s_i)

which lands on y_{i+1} = D_i when s_{i+1} = 0.
"""

from __future__ import annotations

from .base import Solver, SolverState, bc, register


def ddim_update(y, d, s, s_next):
    """The exact first-order exponential-integrator step from level s to s_next (s_next >= 0)."""
    return d + bc(s_next / s, y) * (y - d)


@register
class DDIM(Solver):
    name = "ddim"
    aliases = ("euler", "dpm-solver-1", "dpm++1")
    order = 1
    paper = "Denoising Diffusion Implicit Models (Song et al. 2021), eq. 12, eta=0"
    nfe_rule = "1 per step"

    def step(self, state: SolverState, denoise) -> SolverState:
        s, s_next = state.s, state.s_next
        d = denoise(state.y, s)
        return state.replace(y=ddim_update(state.y, d, s, s_next), i=state.i + 1)


class SingleStepSolver(Solver):
    """A method whose step needs only the current state (Heun, RK4, DPM-Solver-k, ...).

    Subclasses give ``update(y, s, s_next, denoise)`` for ``s_next > 0``; the step to s = 0 is
    the shared first-order limit ``y = D(y, s)`` (one evaluation), so that rule lives here once.
    """

    def update(self, y, s, s_next, denoise):  # pragma: no cover - abstract
        raise NotImplementedError

    def step(self, state: SolverState, denoise) -> SolverState:
        y, s, s_next = state.y, state.s, state.s_next
        if s_next == 0:
            y = ddim_update(y, denoise(y, s), s, s_next)
        else:
            y = self.update(y, s, s_next, denoise)
        return state.replace(y=y, i=state.i + 1)
