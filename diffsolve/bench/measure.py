"""Measuring one cell: the shared starting noise and reference of a (model, seed), then one
method's samples compared with them.

Every cell of one (model, seed) starts from the same noise, ``y_0 = s_max * noise`` with noise
from :meth:`NoiseSource.initial` (per-sample seeds ``seed * 1_000_000 + b``), and is compared with
the same reference: RK4 (:mod:`diffsolve.solvers.rk4`) in lambda with ``ref_steps`` steps from
``s_max`` to ``s_min`` on the same denoiser, then the exact final step ``D(y, s_min)`` that every
sampler ends with. Its own error is the RMS distance to torchdiffeq's dopri5 (rtol = atol =
``ref_rtol``) followed by the same final step.

    >>> from diffsolve.bench.cells import make_cells
    >>> from diffsolve.bench.measure import compute_context, run_cell
    >>> from diffsolve.bench.spec import SweepSpec
    >>> spec = SweepSpec(models=("gmm-2d",), methods=("diffsolve:dpm++2m[log-snr]",), nfes=(8,),
    ...                  seeds=(0,), batch=8, ref_steps=20)
    >>> ctx = compute_context(spec, "gmm-2d", 0)
    >>> row = run_cell(spec, make_cells(spec)[-1], ctx)
    >>> row["status"], row["nfe"], row["rms"] < 0.1
    ('ok', 8, True)
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..denoisers import from_network
from ..metrics import exact as mx
from ..metrics.features import class_accuracy
from ..metrics.frechet import frechet_distance
from ..auto import auto_plan
from ..paths import Path
from ..plan import Plan
from ..sample import sample
from ..solvers import NoiseSource, StabilityWarning
from ..tune import tune
from .cells import Cell
from .methods import parse_method
from .networks import BoundNet, cond_for, model_network, model_path_prediction, one_thread
from .peers import PEERS, CountingNet, applicable, available, dopri5_to_s_min, run_peer
from .spec import SweepSpec

__all__ = ["Context", "sample_seeds", "compute_context", "run_cell"]


@dataclass
class Context:
    """What every cell of one (model, seed) shares: the noise and starting state, the reference
    solution (with its NFE), its cross-check, and two exact sample sets (exact mixtures only)."""

    noise: Tensor
    y0: Tensor
    ref: Tensor
    ref_nfe: int
    check: Tensor | None
    check_nfe: int
    check_label: str
    exact_a: Tensor | None
    exact_b: Tensor | None


def sample_seeds(seed: int, batch: int) -> list[int]:
    """The per-sample seeds of a (model, seed): ``seed * 1_000_000 + b``."""
    return [seed * 1_000_000 + b for b in range(batch)]


def compute_context(spec: SweepSpec, model: str, seed: int) -> Context:
    """Noise, reference solution (and its cross-check) and exact sample sets for one (model, seed)."""
    with one_thread(), torch.no_grad():
        m, net, p, pred, exact = model_network(model, spec.path, spec.prediction)
        noise = NoiseSource.initial(sample_seeds(seed, spec.batch), tuple(m.shape))
        y0 = noise * p.s_max
        cnet = CountingNet(BoundNet(net, cond_for(m, spec.batch)))
        den = from_network(cnet, p, pred)
        ref = sample(den, noise, solver="rk4", nfe=4 * spec.ref_steps + 1, schedule="log-snr", path=p).samples
        ref_nfe = cnet.calls
        cnet.calls = 0
        try:
            chk = den(dopri5_to_s_min(den, p, y0, spec.ref_rtol), p.s_min)
            label = f"torchdiffeq dopri5 rtol=atol={spec.ref_rtol:g}"
        except ImportError:  # no torchdiffeq: RK4 with half the steps (an upper bound on the error)
            chk = sample(den, noise, solver="rk4", nfe=4 * (spec.ref_steps // 2) + 1, schedule="log-snr", path=p).samples
            label = f"rk4 with {spec.ref_steps // 2} steps (torchdiffeq not installed)"
        check_nfe = cnet.calls
        ea = eb = None
        if exact:
            ea = m.sample(spec.batch, generator=torch.Generator().manual_seed(10_000 + seed))
            eb = m.sample(spec.batch, generator=torch.Generator().manual_seed(20_000 + seed))
    return Context(noise, y0, ref, ref_nfe, chk, check_nfe, label, ea, eb)


def _metrics(spec: SweepSpec, model: str, x: Tensor, ctx: Context, seed: int) -> dict[str, float]:
    m, _, _, _, exact = model_network(model, spec.path, spec.prediction)
    out = {"rms": mx.rms_error(x, ctx.ref)}
    if not bool(torch.isfinite(x).all()):
        return out
    if exact:
        out["sliced_w2"] = mx.sliced_w2(x, ctx.exact_a, spec.n_proj, seed)
        out["mmd"] = mx.mmd(x, ctx.exact_a)
        out["mode_tv"] = mx.mode_tv(m, x)
    elif tuple(x.shape[1:]) == (1, 28, 28):  # the shipped MNIST feature network's input
        out["frechet"] = frechet_distance(x.float())
        cond = cond_for(m, x.shape[0])
        if cond:
            out["class_acc"] = class_accuracy(x.float(), cond["labels"])
    return out


_PLANS: dict[tuple[str, ...], Plan] = {}


def tuned_plan(spec: SweepSpec, model: str, nfe: int, method: str) -> Plan:
    """The plan of a tuned row: fitted once per (model, path, prediction, NFE, method) on
    ``spec.tune_batch`` samples of the default tuning noise (never the sweep's), kept in memory
    and in ``spec.plans_dir``."""
    path_name, prediction = model_path_prediction(model, spec.path, spec.prediction)
    key = (model, path_name, prediction, str(nfe), method, str(spec.tune_budget), str(spec.tune_batch))
    if key in _PLANS:
        return _PLANS[key]
    file = None
    if spec.plans_dir:
        file = os.path.join(spec.plans_dir, f"{model}-{path_name}-{prediction}-nfe{nfe}-{method}.plan.json")
        if os.path.exists(file):
            plan = Plan.load(file)
            if plan.cost.get("budget") == spec.tune_budget and len(plan.seeds) == spec.tune_batch:
                _PLANS[key] = plan
                return plan
    m, net, p, pred, _ = model_network(model, spec.path, spec.prediction)
    den = from_network(BoundNet(net, cond_for(m, spec.tune_batch)), p, pred)
    plan = tune(den, nfe, shape=tuple(m.shape), path=p, method=method, budget=spec.tune_budget,
                batch=spec.tune_batch)
    plan = dataclasses.replace(plan, cost={**plan.cost, "budget": spec.tune_budget})
    if file is not None:
        os.makedirs(spec.plans_dir, exist_ok=True)
        plan.save(file)
    _PLANS[key] = plan
    return plan


def plan_note(plan: Plan) -> str:
    """A tuned row's message: what tuning cost and what it chose."""
    return (f"tuned ({plan.method}) on {len(plan.seeds)} samples of its own noise: {plan.cost['calls']} calls, "
            f"{plan.cost['seconds']:.0f} s; {plan.solver} on " + " ".join(f"{v:.4g}" for v in plan.sigmas))


def _run_ours(spec: SweepSpec, info: dict[str, Any], cell: Cell, bnet: BoundNet, p: Path, pred: str,
              ctx: Context) -> tuple[Tensor, int]:
    cnet = CountingNet(bnet)
    den = from_network(cnet, p, pred)
    opts = dict(info["options"])
    if info["solver"] in ("auto", "tuned"):
        plan = auto_plan(int(cell.budget), p) if info["solver"] == "auto" else \
            tuned_plan(spec, cell.model, int(cell.budget), info["schedule"])
        res = sample(den, ctx.noise, plan=plan, path=p, seeds=sample_seeds(cell.seed, spec.batch))
        if res.nfe != cnet.calls:
            raise RuntimeError(f"driver reports {res.nfe} NFE, the network counted {cnet.calls}")
        return res.samples, cnet.calls
    if info["kind"] == "adaptive":
        opts.update(rtol=float(cell.budget), atol=float(cell.budget) / 10)
        nfe = None
    else:
        nfe = int(cell.budget)
    res = sample(den, ctx.noise, solver=info["solver"], nfe=nfe, schedule=info["schedule"], path=p,
                 seeds=sample_seeds(cell.seed, spec.batch), **opts)
    if res.nfe != cnet.calls:
        raise RuntimeError(f"driver reports {res.nfe} NFE, the network counted {cnet.calls}")
    s0 = float(res.sigmas[0])
    if abs(s0 / p.s_max - 1) > 1e-9:  # the comparison needs the reference's starting point
        raise ValueError(f"schedule {info['schedule']!r} starts at s={s0:.6g}, not at s_max={p.s_max:.6g} "
                         "where the reference (and every other method) starts")
    return res.samples, cnet.calls


def run_cell(spec: SweepSpec, cell: Cell, ctx: Context) -> dict[str, Any]:
    """Compute one cell; failures become rows with status ``error`` (nothing is raised), and a
    :class:`~diffsolve.solvers.StabilityWarning` of the run becomes the row's message."""
    info = parse_method(cell.method)
    path_name, prediction = model_path_prediction(cell.model, spec.path, spec.prediction)
    row: dict[str, Any] = {"model": cell.model, "path": path_name, "prediction": prediction, "batch": spec.batch,
                           "seed": cell.seed, "method": cell.method, "lib": info["lib"], "solver": info["solver"],
                           "schedule": info["schedule"],
                           "options": ",".join(f"{k}={v}" for k, v in info["options"].items()),
                           "kind": info["kind"], "budget": cell.budget, "status": "ok", "message": ""}
    with one_thread(), torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", StabilityWarning)
        try:
            _measure(spec, cell, ctx, info, row)
        except Exception as e:  # recorded, not raised: one broken configuration must not stop a sweep
            row.update(status="error", message=f"{type(e).__name__}: {e}"[:300])
    unstable = [str(w.message) for w in caught if issubclass(w.category, StabilityWarning)]
    if unstable and not row["message"]:
        row["message"] = f"warning: {unstable[0]}"[:300]
    return row


def _measure(spec: SweepSpec, cell: Cell, ctx: Context, info: dict[str, Any], row: dict[str, Any]) -> None:
    """Fill ``row`` with the cell's NFE, metrics and status."""
    m, net, p, pred, exact = model_network(cell.model, spec.path, spec.prediction)
    bnet = BoundNet(net, cond_for(m, spec.batch))
    if info["kind"] == "reference":
        row.update(nfe=ctx.ref_nfe, rms=mx.rms_error(ctx.check, ctx.ref),
                   message=f"RK4 in lambda, {spec.ref_steps} steps + final denoise ({ctx.ref_nfe} NFE) vs "
                           f"{ctx.check_label} + final denoise ({ctx.check_nfe} NFE)")
        return
    if info["kind"] == "floor":
        if not exact:
            row.update(status="skipped", message="no exact samples for a trained model")
            return
        row.update(nfe=0, sliced_w2=mx.sliced_w2(ctx.exact_b, ctx.exact_a, spec.n_proj, cell.seed),
                   mmd=mx.mmd(ctx.exact_b, ctx.exact_a), mode_tv=mx.mode_tv_floor(m.weights, spec.batch),
                   message="two independent exact sample sets of the batch size (mode TV: exact expectation)")
        return
    if info["lib"] == "diffsolve":
        x, nfe = _run_ours(spec, info, cell, bnet, p, pred, ctx)
        if info["solver"] == "tuned":
            row["message"] = plan_note(tuned_plan(spec, cell.model, int(cell.budget), info["schedule"]))
    else:
        why = available(info["lib"]) or applicable(cell.method, p, pred)
        if why is not None:
            row.update(status="skipped", message=why)
            return
        budget = cell.budget if PEERS[cell.method].kind == "adaptive" else int(cell.budget)
        x, nfe = run_peer(cell.method, bnet, p, ctx.y0, budget, cell.seed, pred)
    row["nfe"] = nfe
    if info["kind"] != "adaptive" and nfe != int(cell.budget):
        raise RuntimeError(f"counted {nfe} network calls for a budget of {int(cell.budget)}")
    row.update(_metrics(spec, cell.model, x, ctx, cell.seed))
    if not bool(torch.isfinite(x).all()):
        row.update(status="nonfinite", message="samples contain NaN or inf")
