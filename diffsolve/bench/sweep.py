"""Resumable benchmark sweeps: models x methods x NFE x seeds, one CSV row per cell.

A *cell* is one (model, method, budget, seed): ``budget`` is the NFE for fixed-budget methods
and the relative tolerance for adaptive ones (their NFE is counted and reported).  Methods are
named by keys:

* ``diffsolve:SOLVER[SCHEDULE]`` or ``diffsolve:SOLVER[SCHEDULE]{opt=value,...}`` for our solvers
  (every solver in :data:`diffsolve.solvers.SOLVERS` is picked up, see :func:`default_methods`);
* ``diffusers:...``, ``k-diffusion:...``, ``torchdiffeq:...`` for the peers of
  :mod:`diffsolve.bench.peers`;
* ``reference:rk4-vs-dopri5`` (the reference's own error) and ``exact:floor`` (the distribution
  metrics between two exact sample sets of the batch size), one row per model and seed.

Every cell of one (model, seed) starts from the same noise, ``y_0 = s_max * noise`` with noise
from :meth:`NoiseSource.initial` (per-sample seeds ``seed * 1_000_000 + b``), and is compared with
the same reference: RK4 (:mod:`diffsolve.solvers.rk4`) in lambda with ``ref_steps`` steps from
``s_max`` to ``s_min`` on the same denoiser, then the exact final step ``D(y, s_min)`` that every
sampler ends with.  Its own error is the RMS distance to torchdiffeq's dopri5 (rtol = atol =
``ref_rtol``) followed by the same final step.

Resumability: each finished cell is appended to the CSV as one line, flushed and fsync'ed; a
rerun reads the CSV, drops a torn last line, and computes only the cells that are missing.  When
the sweep completes, the file is rewritten (atomically) in the canonical cell order, so that an
interrupted-and-resumed sweep, an uninterrupted one and a Ray run (:func:`run_sweep` with
``ray=``) write identical files.  No timing is recorded in the CSV (it would differ run to run).

Example::

    >>> from diffsolve.bench.sweep import SweepSpec, make_cells
    >>> spec = SweepSpec(models=("gmm-2d",), methods=("diffsolve:dpm++2m[log-snr]",), nfes=(4, 8),
    ...                  seeds=(0,), batch=8)
    >>> [c.method for c in make_cells(spec)]
    ['reference:rk4-vs-dopri5', 'exact:floor', 'diffsolve:dpm++2m[log-snr]', 'diffsolve:dpm++2m[log-snr]']
"""

from __future__ import annotations

import contextlib
import csv
import inspect
import io
import math
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import Tensor

__all__ = ["SweepSpec", "Cell", "COLUMNS", "DEFAULT_NFES", "DEFAULT_SCHEDULES", "DEFAULT_RTOLS", "default_methods",
           "parse_method", "make_cells", "run_cell", "run_sweep", "read_rows", "Interrupted"]

F64 = torch.float64
DEFAULT_NFES = (3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 50)
DEFAULT_SCHEDULES = ("log-snr", "karras", "time-linspace", "time-quadratic", "time")
DEFAULT_RTOLS = (0.1, 0.03, 0.01, 0.003, 0.001)
#: non-default options of our solvers that the default sweep also runs
EXTRA_OPTIONS: dict[str, list[dict[str, Any]]] = {
    "dpm++3m": [{"variant": "reference"}, {"variant": "taylor"}],  # whichever is not the default
    "deis": [{"variable": "s"}, {"variable": "log-s"}],  # polynomial in rho or log(rho): the non-default one
    "dpm-solver-12": [{"controller": "integral"}],  # step-size rule: the paper's or an integral controller
    "dpm-solver-23": [{"controller": "integral"}],
    "unipc-bh1": [{"order": 3}],
    "unipc-bh2": [{"order": 3}],
}
#: grids that stop at s_min with no final denoise (diffusers' convention): the multistep solvers
#: whose long last step then needs a lower order, with both rules for it (dpmpp.multistep_order)
STOP_AT_S_MIN: dict[str, Any] = {"solvers": ("deis", "dpm++3m", "unipc-bh2"),
                                 "schedules": ("time-linspace", "time-quadratic", "karras"),
                                 "lower_order_final": (True, "last")}
REFERENCE, FLOOR = "reference:rk4-vs-dopri5", "exact:floor"

COLUMNS = ["model", "path", "prediction", "batch", "seed", "method", "lib", "solver", "schedule", "options", "kind",
           "budget", "nfe", "rms", "sliced_w2", "mmd", "mode_tv", "frechet", "class_acc", "status", "message"]
KEY = ("model", "path", "prediction", "batch", "seed", "method", "budget")


class Interrupted(Exception):
    """Raised by an ``on_row`` callback to stop a sweep (tests use it to simulate a kill)."""


@dataclass(frozen=True)
class SweepSpec:
    """What to sweep. ``methods`` are method keys (see the module docstring)."""

    models: Sequence[str] = ("gmm-2d", "gmm-64", "gmm-3072")
    methods: Sequence[str] = ()
    nfes: Sequence[int] = DEFAULT_NFES
    rtols: Sequence[float] = DEFAULT_RTOLS
    seeds: Sequence[int] = (0, 1)
    batch: int = 64
    path: str = "ddpm-linear"
    prediction: str = "eps"
    ref_steps: int = 300
    ref_rtol: float = 1e-8
    n_proj: int = 256


@dataclass(frozen=True)
class Cell:
    model: str
    method: str
    budget: float  # NFE (int) for fixed budgets, rtol for adaptive methods, 0 for reference rows
    seed: int

    @property
    def budget_str(self) -> str:
        return _fmt(self.budget)


# --------------------------------------------------------------------------------------
# methods
# --------------------------------------------------------------------------------------

_DS = re.compile(r"^diffsolve:(?P<solver>[^\[\]{}]+)\[(?P<schedule>[^\]]+)\](?:\{(?P<opts>[^}]*)\})?$")


def _opt_value(v: str) -> Any:
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(v, v)


def parse_method(key: str) -> dict[str, Any]:
    """Split a method key into lib, solver, schedule, options and kind (fixed/adaptive/stochastic/...)."""
    if key in (REFERENCE, FLOOR):
        return {"lib": key.split(":")[0], "solver": key.split(":")[1], "schedule": "", "options": {},
                "kind": "reference" if key == REFERENCE else "floor"}
    if key.startswith("diffsolve:"):
        m = _DS.match(key)
        if not m:
            raise ValueError(f"bad method key {key!r}; expected diffsolve:SOLVER[SCHEDULE] or "
                             "diffsolve:SOLVER[SCHEDULE]{opt=value,...}")
        from ..solvers import SOLVERS, get_solver

        opts = {}
        if m.group("opts"):
            for part in m.group("opts").split(","):
                k, _, v = part.partition("=")
                opts[k.strip()] = _opt_value(v.strip())
        solver = m.group("solver")
        if solver not in SOLVERS:
            get_solver(solver)  # raises with the accepted names (or resolves an alias)
        cls = type(get_solver(solver))
        kind = "adaptive" if getattr(cls, "adaptive", False) else "stochastic" if cls.stochastic else "fixed"
        return {"lib": "diffsolve", "solver": cls.name, "schedule": m.group("schedule"), "options": opts, "kind": kind}
    from .peers import PEERS

    if key not in PEERS:
        raise ValueError(f"unknown method {key!r}; accepted: diffsolve:SOLVER[SCHEDULE], {REFERENCE}, {FLOOR}, "
                         f"or a peer: {', '.join(PEERS)}")
    p = PEERS[key]
    return {"lib": p.lib, "solver": p.label, "schedule": "", "options": {}, "kind": p.kind}


def _ds_key(solver: str, schedule: str, opts: dict[str, Any] | None = None) -> str:
    s = f"diffsolve:{solver}[{schedule}]"
    if opts:
        s += "{" + ",".join(f"{k}={v}" for k, v in opts.items()) + "}"
    return s


def default_methods(schedules: Sequence[str] = DEFAULT_SCHEDULES, peers: bool = True,
                    solvers: Iterable[str] | None = None) -> list[str]:
    """Every registered solver of ours on each schedule (adaptive ones on ``log-snr`` only: the
    schedule only gives them their end points; stochastic ones on ``karras`` only), with the
    options of :data:`EXTRA_OPTIONS` and the grids of :data:`STOP_AT_S_MIN`, then every peer."""
    from ..solvers import SOLVERS

    out = []
    for name in sorted(SOLVERS if solvers is None else solvers):
        cls = SOLVERS[name]
        variants: list[dict[str, Any]] = [{}]
        try:
            defaults = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()}
        except (TypeError, ValueError):
            defaults = {}
        for opts in EXTRA_OPTIONS.get(name, []):
            if all(defaults.get(k, inspect.Parameter.empty) == v for k, v in opts.items()):
                continue  # the default configuration, already in the sweep
            try:
                cls(**opts)
            except (TypeError, ValueError):
                continue
            variants.append(opts)
        if getattr(cls, "adaptive", False):
            scheds = ("log-snr",)  # the schedule only gives an adaptive solver its end points
        elif cls.stochastic:
            scheds = (schedules[0] if "karras" not in schedules else "karras",)  # reported apart; one grid
        else:
            scheds = schedules
        for opts in variants:
            for sch in scheds:
                out.append(_ds_key(name, sch, opts))
        if name in STOP_AT_S_MIN["solvers"]:
            for lof in STOP_AT_S_MIN["lower_order_final"]:
                for sch in (sch for sch in schedules if sch in STOP_AT_S_MIN["schedules"]):
                    out.append(_ds_key(name, sch, {"final": "s_min", "lower_order_final": lof}))
    if peers:
        from .peers import PEERS

        out.extend(PEERS)
    return out


#: method-key options that go to the grid (``diffsolve.sample``'s keywords), not to the solver
GRID_OPTIONS = ("final", "rho", "shift")


def _solver_options(opts: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in opts.items() if k not in GRID_OPTIONS}


def _feasible(key: str, nfe: int) -> bool:
    info = parse_method(key)
    if info["kind"] in ("adaptive", "reference", "floor"):
        return False
    if info["lib"] == "diffsolve":
        from ..solvers import NFEError, get_solver

        to_zero = info["options"].get("final", "zero") == "zero"
        solver = get_solver(info["solver"], **_solver_options(info["options"]))
        try:
            solver.for_nfe(nfe, to_zero).steps_for_nfe(nfe, to_zero)
            return True
        except NFEError:
            return False
    from .peers import PEERS, peer_feasible

    return peer_feasible(PEERS[key], nfe)


def make_cells(spec: SweepSpec) -> list[Cell]:
    """The sweep's cells in canonical order: per model, per seed, the reference and floor rows,
    then every method at every feasible NFE (adaptive methods at every tolerance)."""
    cells = []
    kinds = {m: parse_method(m)["kind"] for m in spec.methods}
    for model in spec.models:
        for seed in spec.seeds:
            cells.append(Cell(model, REFERENCE, 0, seed))
            cells.append(Cell(model, FLOOR, 0, seed))
            for m in spec.methods:
                if kinds[m] in ("reference", "floor"):
                    continue
                if kinds[m] == "adaptive":
                    cells.extend(Cell(model, m, float(r), seed) for r in spec.rtols)
                else:
                    cells.extend(Cell(model, m, int(n), seed) for n in spec.nfes if _feasible(m, int(n)))
    return cells


# --------------------------------------------------------------------------------------
# models and contexts (noise, reference, exact samples) per (model, seed)
# --------------------------------------------------------------------------------------

@contextlib.contextmanager
def _one_thread():
    """Run with one intra-op thread: results then do not depend on the machine's thread count
    (serial and Ray runs agree bit for bit)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@lru_cache(maxsize=8)
def _model(name: str, path: str, prediction: str):
    """(model, net, path object, prediction, exact?) for a model name."""
    from ..models.gmm import BUILTINS, builtin
    from ..paths import get_path

    if name in BUILTINS:
        g = builtin(name)
        p = get_path(path)
        return g, g.network(p, prediction), p, prediction, True
    from ..cli_sample import load_model

    m = load_model(name)
    net = getattr(m, "net", None)
    if net is None:
        raise ValueError(f"model {name!r} exposes no network (.net); the benchmark needs one")
    return m, _InDtype(net, getattr(m, "net_dtype", None)), m.path, m.prediction, False


class _InDtype:
    """A trained network run in its own precision (e.g. float32 weights) whatever the caller's
    state dtype (float64 here, float32 in some peers); the output comes back in the input's dtype."""

    def __init__(self, net, dtype: torch.dtype | None):
        self.net, self.dtype = net, dtype

    def __call__(self, x, t, **kw):
        if self.dtype is None or x.dtype == self.dtype:
            return self.net(x, t, **kw)
        t = t.to(self.dtype) if isinstance(t, Tensor) else t
        return self.net(x.to(self.dtype), t, **kw).to(x.dtype)


def _cond_for(model, batch: int) -> dict:
    k = getattr(model, "num_classes", None)
    if k:
        return {"labels": torch.arange(batch) % int(k)}
    return {}


class _BoundNet:
    """A network with its conditioning bound (peers call ``net(x, t)``)."""

    def __init__(self, net, cond):
        self.net, self.cond = net, cond

    def __call__(self, x, t, **kw):
        return self.net(x, t, **self.cond, **kw)


@dataclass
class Context:
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
    return [seed * 1_000_000 + b for b in range(batch)]


def compute_context(spec: SweepSpec, model: str, seed: int) -> Context:
    """Noise, reference solution (and its cross-check) and exact sample sets for one (model, seed)."""
    from .. import sample
    from ..denoisers import from_network
    from ..solvers.base import NoiseSource
    from .peers import CountingNet, dopri5_to_s_min

    with _one_thread(), torch.no_grad():
        m, net, p, pred, exact = _model(model, spec.path, spec.prediction)
        noise = NoiseSource.initial(sample_seeds(seed, spec.batch), tuple(m.shape))
        y0 = noise * p.s_max
        cnet = CountingNet(_BoundNet(net, _cond_for(m, spec.batch)))
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


# --------------------------------------------------------------------------------------
# one cell
# --------------------------------------------------------------------------------------

def _metrics(spec: SweepSpec, model: str, x: Tensor, ctx: Context, seed: int) -> dict[str, float]:
    from ..metrics import exact as mx

    m, _, _, _, exact = _model(model, spec.path, spec.prediction)
    out = {"rms": mx.rms_error(x, ctx.ref)}
    if not bool(torch.isfinite(x).all()):
        return out
    if exact:
        out["sliced_w2"] = mx.sliced_w2(x, ctx.exact_a, spec.n_proj, seed)
        out["mmd"] = mx.mmd(x, ctx.exact_a)
        out["mode_tv"] = mx.mode_tv(m, x)
    elif tuple(x.shape[1:]) == (1, 28, 28):  # the shipped MNIST feature network's input
        from ..metrics.features import class_accuracy
        from ..metrics.frechet import frechet_distance

        out["frechet"] = frechet_distance(x.float())
        cond = _cond_for(m, x.shape[0])
        if cond:
            out["class_acc"] = class_accuracy(x.float(), cond["labels"])
    return out


def run_cell(spec: SweepSpec, cell: Cell, ctx: Context) -> dict[str, Any]:
    """Compute one cell; failures become rows with status ``error`` (nothing is raised)."""
    info = parse_method(cell.method)
    path_name, prediction = model_path_prediction(spec, cell.model)
    row: dict[str, Any] = {"model": cell.model, "path": path_name, "prediction": prediction, "batch": spec.batch,
                           "seed": cell.seed, "method": cell.method, "lib": info["lib"], "solver": info["solver"],
                           "schedule": info["schedule"],
                           "options": ",".join(f"{k}={v}" for k, v in info["options"].items()),
                           "kind": info["kind"], "budget": cell.budget, "status": "ok", "message": ""}
    with _one_thread(), torch.no_grad():
        try:
            m, net, p, pred, exact = _model(cell.model, spec.path, spec.prediction)
            bnet = _BoundNet(net, _cond_for(m, spec.batch))
            if info["kind"] == "reference":
                from ..metrics.exact import rms_error

                row.update(nfe=ctx.ref_nfe, rms=rms_error(ctx.check, ctx.ref),
                           message=f"RK4 in lambda, {spec.ref_steps} steps + final denoise ({ctx.ref_nfe} NFE) vs "
                                   f"{ctx.check_label} + final denoise ({ctx.check_nfe} NFE)")
                return row
            if info["kind"] == "floor":
                from ..metrics import exact as mx

                if not exact:
                    row.update(status="skipped", message="no exact samples for a trained model")
                    return row
                row.update(nfe=0, sliced_w2=mx.sliced_w2(ctx.exact_b, ctx.exact_a, spec.n_proj, cell.seed),
                           mmd=mx.mmd(ctx.exact_b, ctx.exact_a), mode_tv=mx.mode_tv_floor(m.weights, spec.batch),
                           message="two independent exact sample sets of the batch size (mode TV: exact expectation)")
                return row
            if info["lib"] == "diffsolve":
                x, nfe = _run_ours(spec, info, cell, bnet, p, pred, ctx)
            else:
                from .peers import PEERS, applicable, available, run_peer

                why = available(info["lib"]) or applicable(cell.method, p, pred)
                if why is not None:
                    row.update(status="skipped", message=why)
                    return row
                budget = cell.budget if PEERS[cell.method].kind == "adaptive" else int(cell.budget)
                x, nfe = run_peer(cell.method, bnet, p, ctx.y0, budget, cell.seed, pred)
            row["nfe"] = nfe
            if info["kind"] != "adaptive" and nfe != int(cell.budget):
                raise RuntimeError(f"counted {nfe} network calls for a budget of {int(cell.budget)}")
            row.update(_metrics(spec, cell.model, x, ctx, cell.seed))
            if not bool(torch.isfinite(x).all()):
                row.update(status="nonfinite", message="samples contain NaN or inf")
        except Exception as e:  # recorded, not raised: one broken configuration must not stop a sweep
            row.update(status="error", message=f"{type(e).__name__}: {e}"[:300])
    return row


def _run_ours(spec, info, cell, bnet, p, pred, ctx):
    from .. import sample
    from ..denoisers import from_network
    from .peers import CountingNet

    cnet = CountingNet(bnet)
    den = from_network(cnet, p, pred)
    opts = dict(info["options"])
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


# --------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------

def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if math.isfinite(v) and v == int(v) and abs(v) < 1e15:
            return str(int(v))
        return repr(v)
    return str(v)


def _line(row: dict[str, Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([_fmt(row.get(c)) for c in COLUMNS])
    return buf.getvalue()


def _key_of(row: dict[str, Any]) -> tuple[str, ...]:
    return tuple(_fmt(row[k]) if not isinstance(row[k], str) else row[k] for k in KEY)


def _cell_key(spec: SweepSpec, c: Cell) -> tuple[str, ...]:
    path, prediction = model_path_prediction(spec, c.model)
    return (c.model, path, prediction, str(spec.batch), str(c.seed), c.method, c.budget_str)


def model_path_prediction(spec: SweepSpec, model: str) -> tuple[str, str]:
    """The path and prediction a model is sampled with: the sweep's for an exact mixture (its
    network can be built on any path), the checkpoint's own for a trained model."""
    _, _, p, pred, _ = _model(model, spec.path, spec.prediction)
    return p.name, pred


def read_rows(csv_path: str) -> list[dict[str, str]]:
    """Rows of a sweep CSV (a torn last line, left by a kill mid-write, is ignored)."""
    if not os.path.exists(csv_path):
        return []
    with open(csv_path, newline="") as f:
        text = f.read()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    rows = list(csv.DictReader(io.StringIO(text)))
    return rows


def _repair(csv_path: str) -> None:
    """Drop a torn last line and make sure the header is the current one."""
    from ..io import atomic_write_text

    if not os.path.exists(csv_path):
        return
    with open(csv_path, newline="") as f:
        text = f.read()
    header = ",".join(COLUMNS) + "\n"
    fixed = text[: text.rfind("\n") + 1] if text and not text.endswith("\n") else text
    if not fixed.startswith(header):
        if fixed.strip():
            raise ValueError(f"{csv_path} is not a sweep CSV of this version (header differs); "
                             "move it away or pick another output")
        fixed = header
    if fixed != text:
        atomic_write_text(csv_path, fixed)


def _append(csv_path: str, row: dict[str, Any]) -> None:
    new = not os.path.exists(csv_path)
    with open(csv_path, "a", newline="") as f:
        if new:
            f.write(",".join(COLUMNS) + "\n")
        f.write(_line(row))
        f.flush()
        os.fsync(f.fileno())


def _canonicalize(spec: SweepSpec, csv_path: str, cells: list[Cell]) -> None:
    from ..io import atomic_write_text

    rows = read_rows(csv_path)
    by_key = {tuple(r[k] for k in KEY): r for r in rows}
    order = [_cell_key(spec, c) for c in cells]
    seen = set()
    out = [",".join(COLUMNS) + "\n"]
    for k in order:
        if k in by_key and k not in seen:
            out.append(_line(by_key[k]))
            seen.add(k)
    for r in rows:  # rows of other sweeps sharing the file, in their order
        k = tuple(r[c] for c in KEY)
        if k not in seen:
            out.append(_line(r))
            seen.add(k)
    atomic_write_text(csv_path, "".join(out))


# --------------------------------------------------------------------------------------
# the sweep
# --------------------------------------------------------------------------------------

def _run_group(spec: SweepSpec, cells: list[Cell], ctx: Context) -> list[dict[str, Any]]:
    return [run_cell(spec, c, ctx) for c in cells]


def run_sweep(spec: SweepSpec, csv_path: str, *, ray: str | None = None, ray_cpus: int | None = None,
              on_row: Callable[[dict[str, Any], int, int], None] | None = None,
              log: Callable[[str], None] | None = None, chunk: int = 16) -> list[dict[str, str]]:
    """Run (or resume) a sweep into ``csv_path``; returns the final rows.

    ``ray``: None (serial), ``"local"`` (start a Ray cluster on this machine with ``ray_cpus``
    CPUs) or the address of a running cluster.  ``on_row(row, done, total)`` is called after every
    appended row; raising :class:`Interrupted` from it stops the sweep (rows written so far stay).
    """
    cells = make_cells(spec)
    d = os.path.dirname(os.path.abspath(csv_path))
    os.makedirs(d, exist_ok=True)
    _repair(csv_path)
    done = {tuple(r[k] for k in KEY) for r in read_rows(csv_path)}
    todo = [c for c in cells if _cell_key(spec, c) not in done]
    total, n_done = len(cells), len(cells) - len(todo)
    if log:
        log(f"{total} cells, {n_done} already in {csv_path}, {len(todo)} to compute")
    groups: dict[tuple[str, int], list[Cell]] = {}
    for c in todo:
        groups.setdefault((c.model, c.seed), []).append(c)

    def emit(row):
        nonlocal n_done
        _append(csv_path, row)
        n_done += 1
        if on_row is not None:
            on_row(row, n_done, total)

    if ray is None:
        for (model, seed), gcells in groups.items():
            ctx = compute_context(spec, model, seed)
            for c in gcells:
                emit(run_cell(spec, c, ctx))
    else:
        _run_ray(spec, groups, emit, ray, ray_cpus, chunk)
    _canonicalize(spec, csv_path, cells)
    return read_rows(csv_path)


def _run_ray(spec, groups, emit, address, cpus, chunk):
    try:
        import ray as _ray
    except ImportError:
        raise ImportError("--ray needs Ray: pip install 'diffsolve[ray]' (or pip install ray)") from None
    started = False
    if not _ray.is_initialized():
        if address == "local":
            _ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        else:
            _ray.init(address=address, log_to_driver=False)
        started = True
    try:
        ctx_task = _ray.remote(compute_context)
        group_task = _ray.remote(_run_group)
        spec_ref = _ray.put(spec)
        pending = []
        for (model, seed), gcells in groups.items():
            ctx_ref = ctx_task.remote(spec_ref, model, seed)
            for i in range(0, len(gcells), chunk):
                pending.append(group_task.remote(spec_ref, gcells[i:i + chunk], ctx_ref))
        while pending:
            ready, pending = _ray.wait(pending, num_returns=1)
            for row in _ray.get(ready[0]):
                emit(row)
    finally:
        if started:
            _ray.shutdown()
