"""The MNIST inverse-problem benchmark and the pieces ``diffsolve inverse`` shares with it.

The shipped prior ``diffsolve.load("mnist")`` (EDM, data in [-1, 1], classes 0-9 and the null
label 10), the tasks of :mod:`~.inverse_problems` at ``sigma_y`` = 0.05 in [0, 1] pixel units
(0.1 in the model's units), the first ``num`` MNIST test images as truths, each measured with its
own seeded noise. Row groups: ``uncond`` (the null label) and ``cond`` (the true labels).

Per (task, group, method, budget) row: PSNR and SSIM in [0, 1] units against the truth (means
over the images), the shipped CNN's accuracy (``acc_shipped``) and the independent MLP's
(``acc_independent``, :mod:`~.inverse_classifier`) on the reconstructions vs the true digit, the
Frechet distance of the reconstructions (shipped features; biased upward at small n), and for
our methods at ``spread_nfes`` the posterior spread: per-pixel standard deviation in [0, 1]
units of ``spread_samples`` samples per measurement for the first ``spread_truths`` truths,
averaged. Methods: ours (the registry) at ``nfes``; deepinv's DPS, DDRM and DiffPIR through the
peer adapter at their defaults (budget ``0``) and at ``peer_nfes``; cells over ``max_calls``
(NFE x images) are skipped with the reason. Baselines (budget 0): ``baseline:zero-fill``
(inpainting: missing pixels black) and ``baseline:pinv`` (A^+ y).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from ..checks import check_choice
from ..inverse import DEFAULT_METHOD, METHODS, Inpainting, Operator, sigma_in_model_units, solve_inverse
from ..metrics import frechet_distance, layer_outputs
from ..metrics.image import psnr, ssim, to_unit_range
from .inverse_classifier import independent_classifier
from .inverse_problems import MNIST_TASKS, mnist_operator
from .inverse_store import Table, run_into

__all__ = ["MnistSpec", "run_mnist", "solve_task", "reconstruction_metrics", "measurement_image", "posterior_figure",
           "COLUMNS", "KEY", "PEERS", "GROUPS", "SIGMA01", "NULL_LABEL", "VALUE_RANGE"]

SIGMA01 = 0.05
VALUE_RANGE = (-1.0, 1.0)
NULL_LABEL = 10
GROUPS = ("uncond", "cond")
PEERS = ("deepinv:dps", "deepinv:ddrm", "deepinv:diffpir")
BASELINES = ("baseline:zero-fill", "baseline:pinv")
_SPREAD_SEED = 1_000_000
COLUMNS = ["task", "group", "num", "method", "budget", "nfe", "vjp", "psnr", "ssim", "acc_shipped", "acc_independent",
           "fd", "spread", "seconds", "status", "message"]
KEY = ("task", "group", "num", "method", "budget")


@dataclass(frozen=True)
class MnistSpec:
    """What to run (see the module docstring); ``methods=None``: every registered method."""

    tasks: Sequence[str] = MNIST_TASKS
    groups: Sequence[str] = GROUPS
    methods: Sequence[str] | None = None
    nfes: Sequence[int] = (20, 100)
    peers: Sequence[str] = PEERS
    peer_nfes: Sequence[int] = (0, 100)
    num: int = 32
    sigma01: float = SIGMA01
    spread_nfes: Sequence[int] | None = None  #: default: the first of nfes
    spread_truths: int = 8
    spread_samples: int = 4
    max_calls: int = 100 * 32 * 2
    cond_methods: Sequence[str] | None = None

    def __post_init__(self) -> None:
        for t in self.tasks:
            mnist_operator(t)
        for g in self.groups:
            check_choice("MnistSpec", "groups", g, GROUPS)
        for m in (*self.our_methods, *(self.cond_methods or ())):
            check_choice("MnistSpec", "methods", m, sorted(METHODS))
        for p in self.peers:
            check_choice("MnistSpec", "peers", p, PEERS)
        if not 1 <= self.num <= 10000:
            raise ValueError(f"num must be in [1, 10000] (MNIST test images), got {self.num}")
        if self.spread_nfes is None:
            object.__setattr__(self, "spread_nfes", tuple(self.nfes[:1]))
        if not 0 <= self.sigma01 < 1:
            raise ValueError(f"sigma01 must be in [0, 1) ([0, 1] pixel units), got {self.sigma01}")

    @property
    def our_methods(self) -> tuple[str, ...]:
        return tuple(sorted(METHODS)) if self.methods is None else tuple(self.methods)

    def methods_of(self, group: str) -> tuple[str, ...]:
        """Our methods in a row group (``cond_methods`` restricts the conditional group)."""
        return self.our_methods if group == "uncond" or self.cond_methods is None else tuple(self.cond_methods)


def _cond(group: str, labels: Tensor) -> dict[str, Tensor]:
    return {"labels": torch.full_like(labels, NULL_LABEL) if group == "uncond" else labels.clone()}


def solve_task(prior: Any, operator: Operator, y: Tensor, sigma_y: float, method: str, nfe: int, seeds: list[int],
               cond: dict[str, Tensor], progress: bool = False) -> tuple[Tensor, int, int]:
    """Posterior samples for ``y`` (one row per seed) with our method or a peer
    (``deepinv:NAME``; ``nfe`` 0: the peer's defaults): (samples, nfe, vjp)."""
    if method.startswith("deepinv:"):
        from .deepinv_peer import run_deepinv
        out = run_deepinv(method.split(":", 1)[1], prior, operator, y, sigma_y, nfe=nfe or None, seeds=seeds,
                          cond=cond)
        return out["samples"], int(out["nfe"]), int(out["vjp"])
    res = solve_inverse(prior, operator, y, sigma_y, method=method, nfe=nfe, seeds=seeds, cond=cond,
                        progress=progress)
    return res.samples, int(res.nfe), int(res.info.get("vjp", 0))


def measurement_image(operator: Operator, y: Tensor) -> Tensor:
    """The measurement as an image: itself where A keeps the image shape, else A^+ y (zero fill
    for inpainting, block upsampling for pooling)."""
    if tuple(operator.out_shape) == tuple(operator.in_shape):
        return y
    return operator.pinv(y)


def _baseline(name: str, operator: Operator, y: Tensor) -> Tensor:
    if name == "baseline:pinv":
        return operator.pinv(y)
    if not isinstance(operator, Inpainting):
        raise ValueError("zero fill applies to inpainting only")
    lo = VALUE_RANGE[0]
    return operator.adjoint(y - lo) + lo  # missing pixels at the range's bottom (black)


def reconstruction_metrics(x: Tensor, truth: Tensor, labels: Tensor) -> dict[str, float]:
    """PSNR / SSIM in [0, 1] units, both classifiers' accuracy vs ``labels`` and the Frechet
    distance (n >= 2) of reconstructions ``x`` (N, 1, 28, 28) in [-1, 1]."""
    u, t = to_unit_range(x, VALUE_RANGE), to_unit_range(truth, VALUE_RANGE)
    out = layer_outputs(x.float().clamp(*VALUE_RANGE))
    m = {"psnr": float(psnr(u, t).clamp(max=100).mean()), "ssim": float(ssim(u, t).mean()),
         "acc_shipped": float((out["logits"].argmax(1) == labels).double().mean()),
         "acc_independent": independent_classifier().accuracy(x, labels)}
    if x.shape[0] >= 2:
        m["fd"] = frechet_distance(out["penultimate"])
    return m


def posterior_spread(samples: Tensor, per: int) -> float:
    """Per-pixel std in [0, 1] units of ``per`` consecutive samples per measurement, averaged."""
    u = to_unit_range(samples, VALUE_RANGE)
    return float(u.reshape(-1, per, *u.shape[1:]).std(1).mean())


class _Data:
    """Truths, labels, operators and measurements of a run (built once)."""

    def __init__(self, spec: MnistSpec):
        from ..data import mnist
        x, lab = mnist("test")
        self.truth, self.labels = x[: spec.num].to(torch.float64), lab[: spec.num]
        self.sigma_y = sigma_in_model_units(spec.sigma01, VALUE_RANGE)
        self.seeds = list(range(spec.num))
        self.ops = {t: mnist_operator(t) for t in spec.tasks}
        self.y = {t: op.measure(self.truth, self.sigma_y, seeds=self.seeds) for t, op in self.ops.items()}


def mnist_cells(spec: MnistSpec) -> list[tuple[str, str, str, int]]:
    """(task, group, method, budget) in canonical order."""
    cells = []
    for t in spec.tasks:
        for g in spec.groups:
            if g == "uncond":
                cells.extend((t, g, b, 0) for b in BASELINES if b != "baseline:zero-fill" or t.startswith("inpaint"))
            cells.extend((t, g, m, n) for m in spec.methods_of(g) for n in spec.nfes)
            if g == "uncond":
                cells.extend((t, g, p, n) for p in spec.peers for n in spec.peer_nfes)
    return cells


def _calls(method: str, budget: int, num: int) -> int:
    if method.startswith("deepinv:") and budget == 0:
        from .deepinv_peer import default_steps
        budget = default_steps(method.split(":", 1)[1])
    return budget * num


def run_cell(spec: MnistSpec, data: _Data, prior: Any, task: str, group: str, method: str, budget: int,
             keep: Callable[[str, Tensor, int], None] | None = None) -> dict[str, Any]:
    """One row (see the module docstring); ``keep(task, samples, nfe)`` receives the spread run's
    samples of the default method (for the figure)."""
    row: dict[str, Any] = {"task": task, "group": group, "num": spec.num, "method": method, "budget": budget}
    op, y = data.ops[task], data.y[task]
    t0 = time.perf_counter()
    if method.startswith("baseline:"):
        x = _baseline(method, op, y)
        row.update(reconstruction_metrics(x, data.truth, data.labels), nfe=0, status="ok", seconds=0.0)
        return row
    calls = _calls(method, budget, spec.num)
    if calls > spec.max_calls:
        row.update(status="skipped", message=f"{calls} network calls x images over the cap {spec.max_calls} "
                                             "(raise max_calls / --max-calls to run it)")
        return row
    cond = _cond(group, data.labels)
    try:
        x, nfe, vjp = solve_task(prior, op, y, data.sigma_y, method, budget, data.seeds, cond)
    except (ValueError, TypeError, ImportError) as e:
        row.update(status="skipped", message=" ".join(str(e).split())[:300])
        return row
    row.update(reconstruction_metrics(x, data.truth, data.labels), nfe=nfe, vjp=vjp)
    if budget in spec.spread_nfes and group == "uncond" and not method.startswith("deepinv:"):
        k, per = min(spec.spread_truths, spec.num), spec.spread_samples
        idx = torch.arange(k).repeat_interleave(per)
        seeds = [_SPREAD_SEED + i for i in range(k * per)]
        xs, _, _ = solve_task(prior, op, y[idx], data.sigma_y, method, budget, seeds, _cond(group, data.labels[idx]))
        row["spread"] = posterior_spread(xs, per)
        if keep is not None and method == DEFAULT_METHOD:
            keep(task, xs, budget)
    row.update(seconds=round(time.perf_counter() - t0, 2), status="ok")
    return row


def posterior_figure(truth: Tensor, measurement: Tensor, samples: Tensor, path: str, title: str = "") -> None:
    """A grid: one row per measurement, columns truth | measurement | samples | mean | std
    (``samples`` (T, S, 1, H, W) in [-1, 1]; std shown in [0, 1] units, scaled x4)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import atomic_write

    T, S = samples.shape[:2]
    u = to_unit_range(samples.reshape(T * S, *samples.shape[2:]), VALUE_RANGE).reshape(samples.shape)
    cols = [to_unit_range(truth, VALUE_RANGE), to_unit_range(measurement, VALUE_RANGE),
            *[u[:, j] for j in range(S)], u.mean(1), (u.std(1) * 4).clamp(0, 1) if S > 1 else torch.zeros_like(u[:, 0])]
    names = ["truth", "measurement", *[f"sample {j + 1}" for j in range(S)], "mean", "std x4"]
    fig, axes = plt.subplots(T, len(cols), figsize=(1.1 * len(cols), 1.1 * T + (0.4 if title else 0)), squeeze=False)
    for i in range(T):
        for j, c in enumerate(cols):
            ax = axes[i][j]
            ax.imshow(c[i, 0].float().numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(names[j], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format=path.rsplit(".", 1)[-1]))
    plt.close(fig)


def run_mnist(csv_path: str, spec: MnistSpec | None = None, *, figures: str | None = None, progress: bool = True,
              on_row: Callable[[dict[str, Any], int, int], None] | None = None, **fields: Any) -> list[dict[str, str]]:
    """Run (or resume) the MNIST benchmark into ``csv_path``; with ``figures`` (a path prefix)
    write ``PREFIX-TASK.png`` per task from the default method's spread run. Returns the rows."""
    from ..models import load_model

    spec = spec or MnistSpec(**fields)
    table = Table(csv_path, COLUMNS, KEY)
    done = table.done()
    cells = mnist_cells(spec)
    key = lambda c: (c[0], c[1], str(spec.num), c[2], str(c[3]))  # noqa: E731
    todo = [c for c in cells if key(c) not in done]
    need_fig = [t for t in spec.tasks if figures and not os.path.exists(f"{figures}-{t}.png")]
    if not todo and not need_fig:
        table.canonicalize([key(c) for c in cells])
        return table.rows()
    prior, data = load_model("mnist"), _Data(spec)
    independent_classifier()  # fit (or load) before the timings start

    def keep(task: str, xs: Tensor, nfe: int) -> None:
        if figures:
            k, per = min(spec.spread_truths, spec.num), spec.spread_samples
            posterior_figure(data.truth[:k], measurement_image(data.ops[task], data.y[task][:k]),
                             xs.reshape(k, per, *xs.shape[1:]), f"{figures}-{task}.png",
                             f"{task}: {DEFAULT_METHOD}, {nfe} NFE, unconditional, sigma_y = {spec.sigma01} "
                             "([0, 1] units)")

    for t in need_fig:  # a resumed run whose default-method cell is already in the table
        if any(key(c) in done and c[0] == t and c[2] == DEFAULT_METHOD for c in cells):
            k, per = min(spec.spread_truths, spec.num), spec.spread_samples
            idx = torch.arange(k).repeat_interleave(per)
            xs, _, _ = solve_task(prior, data.ops[t], data.y[t][idx], data.sigma_y, DEFAULT_METHOD, spec.spread_nfes[0],
                                  [_SPREAD_SEED + i for i in range(k * per)], _cond("uncond", data.labels[idx]))
            keep(t, xs, spec.spread_nfes[0])
    return run_into(table, [key(c) for c in cells], todo, lambda c: run_cell(spec, data, prior, *c, keep=keep),
                    desc="inverse mnist", progress=progress, on_row=on_row)
