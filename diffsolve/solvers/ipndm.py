"""iPNDM: improved pseudo numerical methods (Zhang & Chen 2022, "Fast Sampling of Diffusion Models
with Exponential Integrator", Appendix on iPNDM; after PNDM, Liu et al. 2022).

iPNDM is linear multistep (Adams-Bashforth) integration of the probability-flow ODE written in
rho = sigma/alpha, which in canonical space is

    dy/ds = eps(y, s) = (y - D(y, s)) / s,

with the lower-order steps of the same family as warm start (PNDM used Runge-Kutta steps, which
cost extra evaluations; iPNDM does not).  The paper uses the constant-step coefficients
(3/2, -1/2), (23, -16, 5)/12, (55, -59, 37, -9)/24.  Those lose the order on the non-uniform
grids every schedule produces, so here the coefficients are the *variable-step* Adams-Bashforth
weights: the exact integral over [s_i, s_{i+1}] of the Lagrange polynomial through the last q
values of eps (:func:`diffsolve.solvers.deis.ab_update`); on a uniform grid they reduce to the
constant ones.  With this choice iPNDM of order q <= 3 coincides with rhoAB-DEIS of order q
(both are "Adams-Bashforth in rho"), and they share one implementation.

Order q at step i = min(order, i + 1); a step to s = 0 is the first-order limit y = D.

Example: iPNDM of order 3 is rhoAB-DEIS of order 3, step for step::

    >>> import torch, diffsolve
    >>> z = torch.randn(8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> kw = dict(nfe=10, schedule="log-snr", order=3)
    >>> a = diffsolve.sample(diffsolve.exact_model("gmm-2d"), z, solver="ipndm", **kw).samples
    >>> torch.equal(a, diffsolve.sample(diffsolve.exact_model("gmm-2d"), z, solver="deis", variable="s", **kw).samples)
    True
"""

from __future__ import annotations

from .base import register
from .deis import _AdamsBashforthS

__all__ = ["IPNDM"]


@register
class IPNDM(_AdamsBashforthS):
    """iPNDM with variable-step Adams-Bashforth coefficients in rho = s (order 1..4, default 4)."""

    name = "ipndm"
    aliases = ("ipndm-v",)
    order = 4
    ORDERS = (1, 2, 3, 4)
    default_order = 4
    paper = "iPNDM (Zhang & Chen 2022, DEIS appendix), variable-step Adams-Bashforth in rho"
