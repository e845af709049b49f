"""FlowChef (Patel, Wen, Metaxas & Yang, 2024/ICCV 2025, "FlowChef: Steering of Rectified Flow
Models for Controlled Generations"; tagged [FlowChef]).

Gradient-free with respect to the network: the deterministic ODE sampler runs as usual, and
after the call that makes x0-hat at (y_i, s_i) the state is moved along the reward's gradient
*at x0-hat* only, skipping the Jacobian d x0-hat / d y (no backpropagation through the model)
[FlowChef Sec. 4, "vector-field steering", Alg. 1]:

    x0-hat <- x0-hat + eta lam grad r(x0-hat),   y_i <- y_i + eta lam grad r(x0-hat)   (K inner steps)

then the ODE step continues from the moved state with the step's own prediction.  Because the
gradient skips the network, the move leaves the step's noise prediction eps-hat = (y - x0-hat)/s
unchanged and moves x0-hat and y together (the canonical-space reading of the paper's frozen
velocity: its x_t <- x_t + eta grad, x0-hat = x_t - t v moves x0-hat by the same amount).  For
the first-order step (``ddim``, the flow's Euler step), y_{i+1} = x0-hat + s_{i+1} eps-hat is
affine in (x0-hat, y) with unit weight on the shift, so moving before the step equals adding
the same shift to y_{i+1} after it: FlowChef is a hook on the solver loop, and the hook after
step i moves y_{i+1} by the K inner gradient steps taken from x0-hat_i (the step into s = 0
moves the sample itself).  ``lam`` scales the gradient (lam = 0: the base sampler).

Cost: exactly the base sampler's nfe network calls per sample (the gradient is the reward's,
``needs = ("grad",)``, no vector-Jacobian product).  ``particles`` must be 1: FlowChef steers
one deterministic trajectory; independent restarts with a best pick would be best-of-N on top
of FlowChef (a different method, and a silent N-fold cost under ``steer``'s default
particles=8), so it is refused rather than reinterpreted.

    >>> import torch, diffsolve
    >>> from diffsolve.rewards import Linear
    >>> m = diffsolve.load("moons")
    >>> res = diffsolve.steer(m, Linear(torch.tensor([1.0, 0.0])), "flowchef", num=4, particles=1, nfe=10)
    >>> res.nfe, res.info["grad_calls"], res.info["vjp"]
    (10, 40, 0)
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..checks import check_int, check_number
from ..noise import NoiseSource
from ..sample import sample
from .base import SteerMethod, check_deterministic, register

__all__ = ["FlowChef", "FlowChefHook"]


class FlowChefHook:
    """The hook: after step i, ``inner`` gradient steps of size ``step`` on x0-hat_i, the sum of
    the moves added to y_{i+1} [FlowChef Alg. 1]."""

    def __init__(self, reward, scale: float, inner: int, max_rms: float | None = 1.0):
        self.reward, self.scale, self.inner, self.max_rms = reward, scale, inner, max_rms
        self.grad_calls = 0

    def clipped(self, g: Tensor) -> Tensor:
        """``g`` with its per-sample RMS clipped to ``max_rms`` (None: unclipped): a sharp reward
        (a likelihood with small sigma_y has gradients ~ 1/sigma_y^2) would otherwise make the
        fixed-size gradient step overshoot and diverge."""
        if self.max_rms is None:
            return g
        rms = g.flatten(1).pow(2).mean(1).sqrt()
        factor = (self.max_rms / rms.clamp_min(1e-300)).clamp(max=1.0)
        return g * factor.reshape(-1, *([1] * (g.ndim - 1))).to(g.dtype)

    def __call__(self, ctx):
        x0 = ctx.x0
        move = torch.zeros_like(x0)
        for _ in range(self.inner):                                   # [FlowChef Alg. 1] inner steps
            move = move + self.scale * self.clipped(self.reward.grad(x0 + move))  # grad r at x0-hat only
            self.grad_calls += x0.shape[0]
        return ctx.replace(y=ctx.y + move)                            # y and x0-hat move together


@register
class FlowChef(SteerMethod):
    """FlowChef: the deterministic ODE sampler, its state moved along the reward's gradient at
    x0-hat after every call (no gradient through the network).  Options:

    * ``step_size`` (default 0.05): eta, the move per inner step is eta lam grad r(x0-hat);
    * ``inner_steps`` (default 1): gradient steps per denoising step (each re-reads the gradient
      at the moved x0-hat, no network call);
    * ``max_grad_rms`` (default 1.0): each sample's gradient is clipped to this root-mean-square
      per coordinate before the step (None: unclipped, the paper's plain step; a likelihood with
      sigma_y = 0.05 then diverged to rewards of -4e20 on the exact benchmark);
    * ``solver`` (default ``"ddim"``, the flow's Euler step): a deterministic solver;
    * ``schedule`` (default: ``"time"``, uniform in the flow's time as in the paper, on a prior
      with a path; else ``"karras"``).
    """

    name = "flowchef"
    paper = "FlowChef: Steering of Rectified Flow Models for Controlled Generations (Patel et al. 2024)"
    cost = "nfe network calls exactly (one trajectory); reward gradients at x0-hat, no VJP"
    needs = ("grad",)
    exact = False

    def __init__(self, step_size: float = 0.05, inner_steps: int = 1, solver: str = "ddim",
                 schedule: str | None = None, max_grad_rms: float | None = 1.0):
        self.step_size = check_number("flowchef", "step_size", step_size, 0)
        self.max_rms = None if max_grad_rms is None else check_number("flowchef", "max_grad_rms", max_grad_rms, 0,
                                                                      low_open=True)
        self.inner = check_int("flowchef", "inner_steps", inner_steps, minimum=1, maximum=10_000)
        self.solver, self.schedule = check_deterministic(
            "flowchef", solver, why="and FlowChef steers one deterministic ODE trajectory", hint=""), schedule

    def run(self, prior, reward, *, num, particles, nfe, lam, seeds, cond, progress=False):
        if particles != 1:
            raise ValueError(f"flowchef: particles={particles!r} is not accepted; accepted: 1 (FlowChef steers one "
                             f"deterministic trajectory per sample with nfe calls; for restarts with a pick use "
                             f"best-of-n)")
        schedule = self.schedule or ("time" if getattr(prior, "path", None) is not None else "karras")
        hook = FlowChefHook(reward, self.step_size * lam, self.inner, self.max_rms)
        res = sample(prior, NoiseSource.initial(seeds, prior.shape), solver=self.solver, nfe=nfe,
                     schedule=schedule, seeds=seeds, cond=cond, hooks=[hook], progress=progress)
        r: Tensor = reward(res.samples).to(torch.float64)
        res.info.update(reward=r, reward_calls=r.shape[0], grad_calls=hook.grad_calls, vjp=0,
                        solver=res.solver, schedule=schedule, step_size=self.step_size, inner_steps=self.inner)
        return res
