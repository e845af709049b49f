"""Sample quality of a trained MNIST model at one solver setting, over guidance scales.

Writes PREFIX.json (every measured cell), PREFIX.md (a table) and PREFIX.png (class accuracy
and FD / floor against the guidance scale). Samples are drawn in chunks that are saved as they
finish (``PREFIX.work/``), so a killed run resumes where it stopped; rerunning with more
samples reuses the chunks already drawn (the noise of sample i is fixed by its seed i).

    python scripts/mnist_quality.py --scales 1 1.5 2 3 --num 500 --out bench/results/mnist_guidance
    python scripts/mnist_quality.py --scales 1 --num 2000 --out bench/results/mnist_fd
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

import diffsolve
from diffsolve.io import atomic_save_tensor, atomic_write_json, atomic_write_text
from diffsolve.metrics import format_quality, image_quality
from diffsolve.solvers.base import NoiseSource


def cell_key(a, scale: float) -> str:
    return (f"{a.model}|{a.solver}|{a.schedule}|nfe={a.nfe}|scale={scale:g}|"
            f"interval={a.interval[0]:g},{a.interval[1]:g}")


def draw(a, model, scale: float, n: int, work: str) -> torch.Tensor:
    """Samples 0..n-1 (labels cycled 0-9), drawn in chunks saved under ``work``."""
    den = model if scale == 1.0 else diffsolve.CFG(model, scale=scale, interval=tuple(a.interval))
    tag = cell_key(a, scale).replace("|", "_").replace("=", "").replace(",", "-")
    out = []
    for start in range(0, n, a.chunk):
        stop = min(n, start + a.chunk)
        f = os.path.join(work, f"{tag}_{start}_{stop}.pt")
        if os.path.exists(f):
            out.append(torch.load(f))
            continue
        seeds = list(range(start, stop))
        noise = NoiseSource.initial(seeds, tuple(model.shape))
        labels = torch.tensor(seeds) % 10
        x = diffsolve.sample(den, noise, solver=a.solver, nfe=a.nfe, schedule=a.schedule, seeds=seeds,
                             cond={"labels": labels}).samples.float()
        atomic_save_tensor(x, f)
        out.append(x)
        print(f"  scale {scale:g}: {stop}/{n} samples", flush=True)
    return torch.cat(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="mnist")
    p.add_argument("--solver", default="dpm++2m")
    p.add_argument("--schedule", default="karras")
    p.add_argument("--nfe", type=int, default=50)
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0])
    p.add_argument("--interval", type=float, nargs=2, default=[0.0, float("inf")],
                   help="guidance interval (s_lo, s_hi) in canonical noise levels")
    p.add_argument("--num", type=int, default=500)
    p.add_argument("--chunk", type=int, default=250)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True, help="output prefix")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    model = diffsolve.load(a.model)
    work = a.out + ".work"
    os.makedirs(work, exist_ok=True)
    results = json.load(open(a.out + ".json")) if os.path.exists(a.out + ".json") else {}
    for scale in a.scales:
        key = f"{cell_key(a, scale)}|n={a.num}"
        if key in results:
            continue
        t0 = time.time()
        x = draw(a, model, scale, a.num, work)
        q = image_quality(x, torch.arange(a.num) % 10)
        q.update(scale=scale, nfe=a.nfe, solver=a.solver, schedule=a.schedule, interval=list(a.interval),
                 model=a.model, seconds=round(time.time() - t0, 1), command="python " + " ".join(sys.argv))
        results[key] = q
        atomic_write_json(a.out + ".json", results)
        print(f"scale {scale:g}: {format_quality(q)}", flush=True)
    rows = sorted(results.values(), key=lambda q: (q["n"], q["interval"][1], q["scale"]))
    cmds = list(dict.fromkeys(q.get("command", "") for q in rows)) + ["python " + " ".join(sys.argv)]
    lines = ["Commands (each cell is kept in the JSON; rerunning one recomputes nothing):", "",
             *[f"    {c}" for c in dict.fromkeys(c for c in cmds if c)], "",
             "| model | solver | schedule | NFE | guidance scale | interval | n | FD | FD floor (n real) | FD / floor "
             "| class accuracy | precision | recall |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for q in rows:
        lines.append(f"| {q['model']} | {q['solver']} | {q['schedule']} | {q['nfe']} | {q['scale']:g} | "
                     f"{q['interval'][0]:g}..{q['interval'][1]:g} | {q['n']} | {q['fd']:.2f} | {q['fd_floor']:.2f} | "
                     f"{q['fd_ratio']:.2f} | {100 * q['class_accuracy']:.1f}% | {q['precision']:.3f} | {q['recall']:.3f} |")
    atomic_write_text(a.out + ".md", "\n".join(lines) + "\n")
    _plot(rows, a.out + ".png")
    return 0


def _plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from diffsolve.io import atomic_write

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    groups: dict = {}
    for q in rows:
        groups.setdefault((q["n"], tuple(q["interval"])), []).append(q)
    for (n, iv), qs in groups.items():
        qs = sorted(qs, key=lambda q: q["scale"])
        lab = f"n={n}" + ("" if iv[1] == float("inf") and iv[0] == 0 else f", interval {iv[0]:g}..{iv[1]:g}")
        ax1.plot([q["scale"] for q in qs], [100 * q["class_accuracy"] for q in qs], "o-", label=lab)
        ax2.plot([q["scale"] for q in qs], [q["fd_ratio"] for q in qs], "o-", label=lab)
    ax1.set_xlabel("guidance scale"), ax1.set_ylabel("class accuracy (%)"), ax1.axhline(90, ls=":", c="gray")
    ax2.set_xlabel("guidance scale"), ax2.set_ylabel("FD / floor at the same n"), ax2.axhline(3, ls=":", c="gray")
    ax1.legend(fontsize=8), ax2.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
