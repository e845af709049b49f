"""``method="auto"``: the default of :func:`~diffsolve.inverse.solve_inverse`, one measured choice
of method and options per operator family (:func:`~.guidance.family`: inpainting,
super-resolution, deblurring, denoising, and ``default`` for dense and unknown operators).

The table :data:`DEFAULT_METHODS` was chosen by PSNR at 20 network calls on MNIST (the shipped
EDM prior in [-1, 1], unconditional, test images 0-63, seeds 0-63, sigma_y = 0.05 in [0, 1]
units); the measurements are in its comment and in docs/inverse.md.  Its ``s_min = 0.1`` is in
the prior's data units (tuned for priors on [-1, 1]).  An explicit ``method=`` is never
changed by it.

    >>> from diffsolve.inverse import solve_inverse
    >>> from diffsolve.inverse.methods.guidance import demo_problem
    >>> res = solve_inverse(**demo_problem(), nfe=20, num=2)         # dense A: the "default" row
    >>> res.info["method"], res.info["auto"]
    ('dps', 'default -> dps')
"""

from __future__ import annotations

from typing import Any

from .base import METHODS, InverseMethod, register
from .guidance import family

__all__ = ["AutoMethod", "DEFAULT_METHODS", "resolve_default"]

#: family -> (method, options).  PSNR in dB at 20 NFE on MNIST (test images 0-63 unless said;
#: see the module docstring); the candidates measured and their numbers:
#:
#: * inpainting: DPS ending its grid at s_min = 0.1 (random 70% missing / 12x12 box):
#:   **19.59 / 16.29**; DPS to 0.002 (its own default) 19.22 / 15.80; s_min 0.05 / 0.2:
#:   19.54 / 16.20, 19.56 / 16.14; DPS zeta x2 (to 0.002) 18.97 / 15.97; PiGDM (ddpm)
#:   18.68 / 15.87, (ddim) 17.76 / 14.56; DDRM 16.59 / 14.86 (eta = 1: 18.17 / 15.86); DiffPIR
#:   15.15 / 14.46; DAPS 14.91 / 13.62; RED-diff 14.64 / 14.92.  70% missing: the independent
#:   classifier recognises the true digit in 96.9% of the DPS-0.1 reconstructions (the shipped
#:   CNN 92.2%); DPS to 0.002: 89.1% / 89.1%.  Held out (images 64-127): 19.30 dB, 96.9% /
#:   93.8%.
#: * super-resolution (4x average pooling): PiGDM with the ddpm sampler ending at s_min = 0.1
#:   **15.83**; PiGDM ddpm to 0.002 15.79, ddim (its own default) 15.32; DPS zeta x2 15.59, DPS
#:   14.86 (s_min 0.1: 14.81), zeta x2 ending at 0.1 15.82 (a tie); DDRM 14.76 (eta = 1:
#:   15.54).  At 100 NFE (images 0-31) PiGDM-0.1 scores 15.50, its 20-NFE score 15.75.
#: * deblurring (Gaussian, std 1.5 px) and denoising: DDRM (its defaults, linear grid 2 -> 0,
#:   eta 0.85); first 32 images: blur **22.92** (PiGDM ddim 22.35, ddpm 21.86, ddpm ending at
#:   0.1 22.25; DAPS 19.62; DiffPIR 19.56; DPS 17.81, ending at 0.1 19.03), denoising **36.06**
#:   (DDNM+ 34.87).
#: * default (dense or unknown operators, not measured on MNIST): DPS at its own defaults, the
#:   method that needs only forward and adjoint.
#:
#: Ending at s_min = 0.1 (0.05 in [0, 1] pixel units, the measurement noise) makes the last call
#: return the guided ``D(y, 0.1)``: the posterior-mean estimate of x0 given the state at that
#: level, not a sample at level 0, so detail finer than that noise is averaged out.  On the exact
#: mixtures it does not add bias (20 NFE, DPS: gmm-2d mode-weight TV 0.59 -> 0.56 at sigma_y
#: 0.05, 0.36 -> 0.30 at 0.2, gmm-64 0.66 -> 0.64; PiGDM ddpm-0.1 vs its default ddim: 0.53 ->
#: 0.45, 0.25 -> 0.21, 0.35 -> 0.27).
DEFAULT_METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "inpainting": ("dps", {"solver_options": {"s_min": 0.1}}),
    "super-resolution": ("pigdm", {"solver": "ddpm", "solver_options": {"s_min": 0.1}}),
    "deblurring": ("ddrm", {}),
    "denoising": ("ddrm", {}),
    "default": ("dps", {}),
}


def resolve_default(operator) -> tuple[str, str, dict[str, Any]]:
    """(family, method name, options) that ``method="auto"`` runs for ``operator``: the row of
    :data:`DEFAULT_METHODS` for its family.

    >>> import torch
    >>> from diffsolve.inverse import Inpainting
    >>> resolve_default(Inpainting(torch.tensor([1, 0])))
    ('inpainting', 'dps', {'solver_options': {'s_min': 0.1}})
    """
    fam = family(operator)
    name, opts = DEFAULT_METHODS.get(fam, DEFAULT_METHODS["default"])
    return fam, name, {k: (dict(v) if isinstance(v, dict) else v) for k, v in opts.items()}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = {**out[k], **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@register
class AutoMethod(InverseMethod):
    """The per-family default (:data:`DEFAULT_METHODS`).  Options given with ``method="auto"``
    are passed to the method it resolves to, over the table's (``solver_options`` merged key by
    key); ``res.info["method"]`` is the method run, ``res.info["auto"]`` the rule applied
    (``"FAMILY -> METHOD"``) and ``res.info["method_options"]`` the options it was given."""

    name = "auto"
    paper = "the per-operator-family choice of DEFAULT_METHODS (measured on MNIST, 20 NFE)"
    cost = "that of the method it resolves to (DPS, PiGDM: 2 per solver evaluation; DDRM: 1 per step)"
    needs = ()
    default_nfe = 20

    def __init__(self, **options: Any):
        self.options = options

    def resolve(self, operator) -> tuple[str, InverseMethod, dict[str, Any]]:
        fam, name, opts = resolve_default(operator)
        opts = _merge(opts, self.options)
        return f"{fam} -> {name}", METHODS[name](**opts), opts

    def run(self, prior, problem, noise, *, nfe, seeds, cond, progress=False):
        rule, method, opts = self.resolve(problem.operator)
        res = method.run(prior, problem, noise, nfe=nfe, seeds=seeds, cond=cond, progress=progress)
        res.info.update(auto=rule, method_options=opts, resolved=method.name)
        return res
