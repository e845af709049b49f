"""The MNIST check of ``auto`` and tuned plans: Frechet distance and class accuracy (the shipped
metric network) of the old default (``dpm++2m`` on ``karras``), ``solver="auto"`` and a plan
fitted by :func:`diffsolve.tune` at each NFE, on the same labelled noise (sample ``i``: seed
``i``, label ``i mod 10``), with classifier-free guidance at the README's scale.

Plans are fitted on their own noise (``TUNE_SEED0 + b``, labels cycled) and kept in
``PREFIX-plans/``; every cell is kept in ``PREFIX.json`` as it finishes, so a killed run
resumes; ``PREFIX.md`` and ``PREFIX.png`` (FD against NFE) are rewritten at the end.

    python -m diffsolve.bench.tune_mnist --out bench/results/tune-mnist
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Sequence

import torch

from ..guidance import CFG
from ..io import atomic_write, atomic_write_json, atomic_write_text
from ..metrics import image_quality
from ..models import load_model
from ..noise import NoiseSource
from ..plan import Plan
from ..sample import sample
from ..tune import TUNE_SEED0, tune

__all__ = ["run_tune_mnist", "CONFIGS"]

#: (name, NFEs): the configurations compared
CONFIGS: tuple[tuple[str, tuple[int, ...]], ...] = (("old default", (5, 6, 8, 10, 20)),
                                                    ("auto", (5, 10, 20)), ("tuned", (5, 6)))


def _plan(model: Any, den: Any, nfe: int, a: argparse.Namespace) -> Plan:
    f = os.path.join(a.out + "-plans", f"mnist-g{a.guidance:g}-nfe{nfe}-ld3.plan.json")
    if os.path.exists(f):
        return Plan.load(f)
    labels = torch.arange(a.tune_batch) % 10
    plan = tune(den, nfe, shape=tuple(model.shape), cond={"labels": labels}, budget=a.tune_budget,
                batch=a.tune_batch, teacher_steps=a.teacher_steps, seeds=[TUNE_SEED0 + b for b in range(a.tune_batch)], progress=not a.quiet)
    os.makedirs(os.path.dirname(f), exist_ok=True)
    plan.save(f)
    return plan


def _draw(den: Any, model: Any, n: int, chunk: int, **kw: Any) -> torch.Tensor:
    out = []
    for start in range(0, n, chunk):
        seeds = list(range(start, min(n, start + chunk)))
        noise = NoiseSource.initial(seeds, tuple(model.shape))
        out.append(sample(den, noise, seeds=seeds, cond={"labels": torch.tensor(seeds) % 10}, **kw).samples.float())
    return torch.cat(out)


def run_tune_mnist(a: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(a.threads)
    model = load_model("mnist")
    den = CFG(model, scale=a.guidance) if a.guidance != 1 else model
    results = json.load(open(a.out + ".json")) if os.path.exists(a.out + ".json") else {}
    for name, nfes in CONFIGS:
        if name not in a.configs:
            continue
        for nfe in nfes:
            key = f"{name}|nfe={nfe}|g={a.guidance:g}|n={a.num}"
            if key in results:
                continue
            t0 = time.time()
            extra: dict[str, Any] = {}
            if name == "old default":
                kw = dict(solver="dpm++2m", schedule="karras", nfe=nfe)
            elif name == "auto":
                kw = dict(nfe=nfe)
            else:
                plan = _plan(model, den, nfe, a)
                kw = dict(plan=plan)
                extra = {"plan": plan.solver + " on " + " ".join(f"{v:.4g}" for v in plan.sigmas),
                         "tuning_calls": plan.cost["calls"], "tuning_seconds": plan.cost["seconds"],
                         "tuning_batch": len(plan.seeds)}
            t1 = time.time()
            x = _draw(den, model, a.num, a.chunk, **kw)
            q = image_quality(x, torch.arange(a.num) % 10)
            q.update(config=name, nfe=nfe, guidance=a.guidance, seconds=round(time.time() - t1, 1),
                     total_seconds=round(time.time() - t0, 1), **extra)
            results[key] = q
            atomic_write_json(a.out + ".json", results)
            if not a.quiet:
                print(f"{name} nfe {nfe}: FD {q['fd']:.2f}, class accuracy {100 * q['class_accuracy']:.1f}%", flush=True)
    _report(results, a)
    return results


def _report(results: dict[str, Any], a: argparse.Namespace) -> None:
    rows = sorted(results.values(), key=lambda q: ([c for c, _ in CONFIGS].index(q["config"]), q["nfe"]))
    lines = ["# auto and tuned plans on the shipped MNIST model", "",
             f"Command: `python -m diffsolve.bench.tune_mnist --out {a.out}` (cells kept in the JSON).", "",
             f"{a.num} samples per cell (sample i: seed i, label i mod 10), classifier-free guidance "
             f"{a.guidance:g}; FD and class accuracy from the shipped metric network (docs/metrics.md); "
             "the FD floor is two real sets of that size. Tuned plans: `diffsolve.tune` (LD3) on "
             f"{a.tune_batch} samples of their own noise, budget {a.tune_budget} calls, RK4 teacher of "
             f"{a.teacher_steps} steps; the tuning seconds were measured on a 2-core CPU shared with other jobs.", "",
             "| configuration | NFE | FD | FD floor | class accuracy | precision | recall | sampling s | plan (tuning cost) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for q in rows:
        plan = f"{q['plan']} ({q['tuning_calls']} calls, {q['tuning_seconds']:.0f} s)" if "plan" in q else ""
        lines.append(f"| {q['config']} | {q['nfe']} | {q['fd']:.2f} | {q['fd_floor']:.2f} | "
                     f"{100 * q['class_accuracy']:.1f}% | {q['precision']:.3f} | {q['recall']:.3f} | {q['seconds']:.0f} | "
                     f"{plan} |")
    atomic_write_text(a.out + ".md", "\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    for name, _ in CONFIGS:
        qs = [q for q in rows if q["config"] == name]
        if qs:
            ax1.plot([q["nfe"] for q in qs], [q["fd"] for q in qs], "o-", label=name)
            ax2.plot([q["nfe"] for q in qs], [100 * q["class_accuracy"] for q in qs], "o-", label=name)
    ax1.set_xlabel("NFE"), ax1.set_ylabel("Frechet distance (lower is better)"), ax1.set_yscale("log")
    ax2.set_xlabel("NFE"), ax2.set_ylabel("class accuracy (%)")
    ax1.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(a.out + ".png", lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output prefix")
    p.add_argument("--num", type=int, default=2000)
    p.add_argument("--chunk", type=int, default=250)
    p.add_argument("--guidance", type=float, default=1.25)
    p.add_argument("--tune-budget", type=int, default=3000)
    p.add_argument("--tune-batch", type=int, default=32)
    p.add_argument("--teacher-steps", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--configs", nargs="+", default=[c for c, _ in CONFIGS], choices=[c for c, _ in CONFIGS],
                   help="which configurations to run (default all)")
    p.add_argument("--quiet", action="store_true")
    run_tune_mnist(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
