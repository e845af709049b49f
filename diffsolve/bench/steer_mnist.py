"""The MNIST steering benchmark: steer the *unconditional* MNIST model (its null label) toward
a class with the shipped steering classifier (``class:N``), judge with the metric network.

Each configuration draws ``per_class`` samples for every class 0..9 (seeds disjoint per class)
and reports the metric network's class accuracy, the Frechet distance to MNIST test (with the
floor of as many real images), the within-class diversity (:func:`.mnist_runs.diversity`: mean
pairwise distance of the metric network's features within a class, divided by that of as many
real test images of the class; 1 = as diverse as real digits), the counted network calls per
sample and the wall time.  A configuration whose label starts with ``ink`` steers toward the continuous
reward ``brightness`` (the mean pixel value: ink mass) instead, from the same unconditional
model, and reports the mean ink of its samples.  The
reference point is the class-conditional model (its own labels, CFG scale 1.25 as the README's
command, ``dpm++2m``) at the same base NFE.  Results are appended to a JSON list, one entry per
finished configuration (resumable: finished configurations are skipped).
"""

from __future__ import annotations

import os
import time
from typing import Any, Sequence

import torch

from ..guidance import CFG
from ..models import load_model
from ..noise import NoiseSource
from ..sample import sample
from ..steer import steer
from .mnist_runs import Runs, judge

__all__ = ["DEFAULT_CONFIGS", "run_steer_mnist", "steer_mnist_report"]

#: (label, method, particles, lam, options)
DEFAULT_CONFIGS: tuple[tuple[str, str, int, float, dict], ...] = (
    ("class-conditional (CFG 1.25)", "reference", 1, 0.0, {}),
    ("unconditional, no steering", "best-of-n", 1, 0.0, {}),
    ("tds K=4 lam=4", "tds", 4, 4.0, {}),
    ("fk K=8 lam=4", "fk", 8, 4.0, {}),
    ("best-of-n N=8 lam=4", "best-of-n", 8, 4.0, {}),
    ("random-search N=8", "random-search", 8, 1.0, {}),
    ("ink: unsteered", "best-of-n", 1, 0.0, {}),
    ("ink: fk K=8 lam=30", "fk", 8, 30.0, {}),
    ("ink: tds K=4 lam=30", "tds", 4, 30.0, {}),
)
#: the first seed of class c is SEED0 + 1000 c (lam and the smoothing were chosen on a scan
#: with seeds from 100000: disjoint)
SEED0 = 200_000


def _reference(model, nfe: int, labels: torch.Tensor, seeds: list[int]):
    res = sample(CFG(model, 1.25), NoiseSource.initial(seeds, model.shape), solver="dpm++2m", nfe=nfe, seeds=seeds,
                 cond={"labels": labels})
    return res.samples, res.nfe


def run_steer_mnist(out_json: str, configs: Sequence[tuple] = DEFAULT_CONFIGS, *, nfe: int = 20, per_class: int = 10,
                    log=print, grid_dir: str | None = None) -> list[dict[str, Any]]:
    """Run (or resume) the configurations; returns every entry of ``out_json``.  With
    ``grid_dir``, each configuration's first 8 samples of every class go to
    ``grid_dir/steer-mnist-<k>.png`` (one row per class)."""
    runs = Runs(out_json, log)
    model = load_model("mnist")
    null = model.null_label
    for name, method, K, lam, opts in configs:
        if name in runs.have:
            continue
        t0 = time.perf_counter()
        xs, ys, calls = [], [], 0
        for c in range(10):
            seeds = list(range(SEED0 + 1000 * c, SEED0 + 1000 * c + per_class))
            if method == "reference":
                x, n = _reference(model, nfe, torch.full((per_class,), c), seeds)
            else:
                reward = "brightness" if name.startswith("ink") else f"class:{c}"
                res = steer(model, reward, method, num=per_class, particles=K, nfe=nfe, lam=lam, seeds=seeds,
                            cond={"labels": torch.full((per_class,), null)}, **opts)
                x, n = res.samples, res.nfe
            xs.append(x.float())
            ys.append(torch.full((per_class,), c))
            calls = n
        x, y = torch.cat(xs), torch.cat(ys)
        q = judge(x, y)
        if grid_dir is not None:
            from ..plots import save_samples

            k = min(8, per_class)
            pick = torch.cat([x[c * per_class: c * per_class + k] for c in range(10)])
            save_samples(pick, os.path.join(grid_dir, f"steer-mnist-{len(runs.entries)}.png"), nrow=k,
                         title=f"{name}: {calls} calls/sample")
        runs.add({"config": name, "method": method, "particles": K, "lam": lam, "options": opts, "nfe": nfe,
                  "calls_per_sample": calls, "num": int(x.shape[0]), **q,
                  "ink": float(((x.clamp(-1, 1) + 1) / 2).mean()), "seconds": time.perf_counter() - t0})
    return runs.entries


def steer_mnist_report(entries: Sequence[dict[str, Any]], prefix: str, command: str) -> str:
    """Write ``PREFIX.md`` (one row per configuration, the reference first); returns its path."""
    from ..io import atomic_write_text

    ref = next((e for e in entries if e["method"] == "reference"), None)
    lines = ["# Steering the unconditional MNIST model toward a class", "", "Produced by:", "", f"    {command}", "",
             "The unconditional model (null label) steered toward each class 0..9 by the shipped steering "
             "classifier (`class:N`), judged by the metric network (a different network): class accuracy and "
             "Frechet distance to MNIST test over all classes' samples; the floor is the FD of as many real "
             "training images (FD is biased upward at small n: compare rows at equal n). The reference is the "
             "class-conditional model with CFG 1.25 and dpm++2m at the same base NFE.", "",
             "| configuration | base NFE | calls / sample | samples | class accuracy | FD | FD / reference FD | "
             "FD floor | diversity | mean ink | seconds |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        ratio = e["fd"] / ref["fd"] if ref else float("nan")
        unsteered = e["method"] != "reference" and e["lam"] == 0   # no class asked for: accuracy is chance
        acc = "-" if e["config"].startswith("ink") or unsteered else f"{100 * e['class_accuracy']:.1f}%"
        div, ink = e.get("diversity", float("nan")), e.get("ink", float("nan"))
        lines.append(f"| {e['config']} | {e['nfe']} | {e['calls_per_sample']} | {e['num']} | "
                     f"{acc} | {e['fd']:.2f} | {ratio:.2f} | {e['fd_floor']:.2f} | {div:.2f} | {ink:.3f} | "
                     f"{e['seconds']:.0f} |")
    lines.append("")
    md = prefix + ".md"
    atomic_write_text(md, "\n".join(lines))
    return md
