"""DPM-Solver++ in data-prediction form (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided
Sampling of Diffusion Probabilistic Models").

In canonical space (divide the paper's x by alpha_{i+1}) the first-order update of eq. (8) is

    y_{i+1} = (s_{i+1}/s_i) y_i - expm1(-h_i) D,     h_i = lambda_{i+1} - lambda_i

and the multistep methods replace D by an extrapolation of earlier denoised outputs.

2M (Algorithm 2): r_i = h_{i-1}/h_i,  D = (1 + 1/(2 r_i)) D_i - 1/(2 r_i) D_{i-1}.

The first step (no history) and any step to s = 0 (h = inf) are first order; with
``lower_order_final`` the last steps of short runs (< 15 steps) lower their order as well.
"""

from __future__ import annotations

import torch

from .base import Solver, SolverState, bc, register
from .euler import ddim_update


def _h(s, s_next):
    return torch.log(s) - torch.log(s_next)


@register
class DPMSolverPP2M(Solver):
    name = "dpm++2m"
    aliases = ("dpmpp_2m", "dpm-solver++2m")
    order = 2
    paper = "DPM-Solver++ (Lu et al. 2022), Algorithm 2"
    nfe_rule = "1 per step"

    def __init__(self, lower_order_final: bool = True):
        self.lower_order_final = lower_order_final

    def step(self, state: SolverState, denoise) -> SolverState:
        i, y, sig = state.i, state.y, state.sigmas
        s, s_next = sig[i], sig[i + 1]
        d = denoise(y, s)
        n = state.n_steps
        first_order = (i == 0 or s_next == 0
                       or (self.lower_order_final and n < 15 and i == n - 1))
        if first_order:
            y_next = ddim_update(y, d, s, s_next)
        else:
            h = _h(s, s_next)
            r = _h(sig[i - 1], s) / h
            d_prev = state.history[-1]
            d_ext = (1 + 1 / (2 * r)) * d - (1 / (2 * r)) * d_prev
            y_next = bc(s_next / s, y) * y - torch.expm1(-h) * d_ext
        return state.replace(y=y_next, i=i + 1, history=self.push(state.history, d, 1))
