"""``diffsolve sample`` and ``diffsolve solvers``."""

from __future__ import annotations

import argparse
import os
import sys

import torch


def _print_table(rows: list[dict], cols: list[str], file=sys.stdout) -> None:
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols), file=file)
    print("  ".join("-" * widths[c] for c in cols), file=file)
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols), file=file)


def cmd_solvers(args) -> int:
    from . import solvers

    _print_table(solvers(), ["name", "order", "stochastic", "nfe", "aliases", "paper"])
    return 0


def load_model(name: str):
    """A sampleable model by name: an exact mixture, or (when available) a shipped checkpoint."""
    from .models.gmm import BUILTINS, builtin

    if name in BUILTINS:
        return builtin(name)
    try:
        from .models.checkpoint import load  # shipped trained models
    except ImportError:
        raise ValueError(f"unknown model {name!r}; accepted: {', '.join(BUILTINS)}") from None
    return load(name)


def quality_lines(model, x: torch.Tensor, labels: torch.Tensor | None) -> list[str]:
    """What the shipped metrics say of samples ``x`` of ``model``: distribution distances against
    exact samples for an exact mixture, the MNIST metrics (docs/metrics.md) for 28x28 grey
    images, nothing for other models."""
    from .data import mnist_missing
    from .metrics import compare_to_exact, image_quality
    from .models.gmm import GaussianMixture

    if isinstance(model, GaussianMixture):
        r = compare_to_exact(model, x.to(torch.float64))
        return [f"against {r['n']} exact samples (floor: two exact sets of that size):",
                f"  sliced W2 {r['sliced_w2']:.4g} (floor {r['sliced_w2_floor']:.4g}), "
                f"MMD^2 {r['mmd']:.3g} (floor {r['mmd_floor']:.3g}), "
                f"mode-weight TV {r['mode_tv']:.3g} (expected {r['mode_tv_floor']:.3g})"]
    if tuple(x.shape[1:]) != (1, 28, 28):
        return []
    why = mnist_missing()  # precision/recall read the MNIST test images; FD and accuracy do not
    q = image_quality(x, labels, knn=why is None)
    if why or "precision" not in q:
        pr = f"  precision/recall not computed: {why or 'they need more than 5 samples'}"
    else:
        pr = (f"  k-NN precision {q['precision']:.3f}, recall {q['recall']:.3f}, "
              f"density {q['density']:.3f}, coverage {q['coverage']:.3f}")
    out = ["quality (the shipped MNIST CNN; docs/metrics.md):"]
    if "class_accuracy" in q:
        out.append(f"  class accuracy {100 * q['class_accuracy']:.1f}% (classified as the requested label)")
    out.append(f"  Frechet distance {q['fd']:.2f} to MNIST test; {q['n']} real training images score "
               f"{q['fd_floor']:.2f} (ratio {q['fd_ratio']:.2f}; FD is biased upward at small n)")
    return out + [pr]


def cmd_sample(args) -> int:
    from .plots import save_samples
    from .sample import sample
    from .solvers.base import NoiseSource

    model = load_model(args.model)
    shape = tuple(model.shape)
    seeds = list(range(args.seed, args.seed + args.num))
    noise = NoiseSource.initial(seeds, shape)
    cond, labels = {}, None
    if args.label is not None:
        labels = torch.tensor([args.label[i % len(args.label)] for i in range(args.num)])
        cond["labels"] = labels
    den, guided = model, ""
    if args.guidance != 1.0 or args.guidance_interval is not None:
        from .guidance import CFG

        if labels is None:
            raise ValueError("--guidance needs --label (classifier-free guidance steers towards the labels)")
        interval = tuple(args.guidance_interval) if args.guidance_interval else (0.0, float("inf"))
        den = CFG(model, scale=args.guidance, interval=interval)
        guided = f", guidance {args.guidance:g}" + (f" on s in [{interval[0]:g}, {interval[1]:g}]"
                                                    if args.guidance_interval else "")
    res = sample(den, noise, solver=args.solver, nfe=args.nfe, schedule=args.schedule, seeds=seeds,
                 cond=cond, progress=not args.quiet, **({"path": args.path} if args.path else {}))
    x = res.samples.float()
    if args.out:
        nrow = len(args.label) if args.label and 4 <= len(args.label) <= 16 and args.num % len(args.label) == 0 else None
        save_samples(x, args.out, nrow=nrow,
                     title=f"{args.model}: {res.solver}, {res.nfe} NFE, {args.schedule}{guided}")
    if args.save_tensor:
        from .io import atomic_save_tensor

        atomic_save_tensor(x, args.save_tensor)
    print(f"{args.num} samples from {args.model} with {res.solver}: {res.nfe} NFE{guided}, "
          f"noise levels {float(res.sigmas[0]):.4g} -> {float(res.sigmas[-1]):.4g}"
          + (f"; wrote {os.path.abspath(args.out)}" if args.out else ""))
    if args.metrics:
        for line in quality_lines(model, x, labels):
            print(line)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("solvers", help="list every solver with its order, NFE rule and paper")
    p.set_defaults(func=cmd_solvers)

    p = sub.add_parser("sample", help="sample a model and write a picture")
    p.add_argument("--model", default="gmm-2d", help="an exact mixture (gmm-2d, gmm-64, gmm-3072) or a shipped model")
    p.add_argument("--solver", default="dpm++2m")
    p.add_argument("--nfe", type=int, default=10)
    p.add_argument("--schedule", default="karras")
    p.add_argument("--path", default=None, help="path whose noise range the schedule spans (default: the model's)")
    p.add_argument("--num", type=int, default=1000, help="number of samples")
    p.add_argument("--seed", type=int, default=0, help="first per-sample seed")
    p.add_argument("--label", type=int, nargs="*", default=None, help="class labels (cycled) for conditional models")
    p.add_argument("--guidance", type=float, default=1.0,
                   help="classifier-free guidance scale (1 = the conditional model; needs --label)")
    p.add_argument("--guidance-interval", type=float, nargs=2, default=None, metavar=("S_LO", "S_HI"),
                   help="guide only at canonical noise levels in [S_LO, S_HI] (Kynkaanniemi et al. 2024)")
    p.add_argument("--no-metrics", dest="metrics", action="store_false",
                   help="do not print the quality numbers (exact mixtures: distances to exact samples; "
                        "MNIST-shaped models: class accuracy, FD, precision/recall)")
    p.add_argument("--out", default="samples.png", help="picture to write (scatter for 2-D, grid for images)")
    p.add_argument("--save-tensor", default=None, help="also save the samples (.pt)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sample)
