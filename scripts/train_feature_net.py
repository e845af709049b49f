"""Train the shipped MNIST feature network and write everything the image-quality metric ships:

    diffsolve/metrics/weights/mnist_cnn.safetensors         the CNN (float32, ~0.4 MB)
    diffsolve/metrics/weights/mnist_test_stats.safetensors  mu (128,), sigma (128, 128) float64 and n
                                                            of the features of the 10,000 test images
    diffsolve/metrics/weights/mnist_floor.json              accuracies, Frechet floors (train-vs-test at
                                                            several n), precision/recall floor, timings

Reproduce (one CPU thread, a few minutes):

    python scripts/train_feature_net.py

and print the validation table of docs/metrics.md (noise, blur, broken samplers) with

    python scripts/train_feature_net.py --validate

Training: the 50,000 MNIST training images, random shifts of up to 2 pixels, AdamW with a
one-cycle learning rate, batch 128; the 10,000 validation images are only watched, the test
images only measured at the end. Deterministic on CPU for a given seed and torch version.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from diffsolve.data import mnist  # noqa: E402
from diffsolve.io import atomic_write, atomic_write_json  # noqa: E402
from diffsolve.metrics.features import WEIGHTS_DIR, WEIGHTS_FILE, MnistNet  # noqa: E402
from diffsolve.metrics.frechet import FLOOR_FILE, REFERENCES, feature_stats, frechet_from_stats  # noqa: E402
from diffsolve.metrics.precision_recall import knn_metrics  # noqa: E402
from diffsolve.train.verifier import random_shift  # noqa: E402

FLOOR_SIZES = (500, 1000, 2000, 5000, 10000, 25000, 50000)


@torch.no_grad()
def evaluate(net: MnistNet, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    pred = torch.cat([net(x[i:i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
    return float((pred == y).double().mean())


@torch.no_grad()
def all_features(net: MnistNet, x: torch.Tensor, layer: str = "penultimate") -> torch.Tensor:
    net.eval()
    return torch.cat([net.layers(x[i:i + 1000])[layer] for i in range(0, len(x), 1000)])


def validate(n: int) -> int:
    """Markdown table: image_quality of n real training images, degraded and broken versions."""
    from diffsolve.metrics.validation import validation_table

    x, y = mnist("train")
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))[:n]
    t0 = time.time()
    rows = validation_table(x[idx], y[idx])
    keys = ["fd", "fd_ratio", "precision", "recall", "density", "coverage", "class_accuracy"]
    print(f"n = {n} training images vs the MNIST test set (fd_floor = {rows[0][1]['fd_floor']:.3f})\n")
    print("| images | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for name, q in rows:
        print(f"| {name} | " + " | ".join(f"{q[k]:.3f}" if k != "fd" else f"{q[k]:.2f}" for k in keys) + " |")
    print(f"\n({time.time() - t0:.0f} s)")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--shift", type=int, default=2, help="max random shift in pixels")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=WEIGHTS_DIR)
    ap.add_argument("--validate", action="store_true",
                    help="train nothing: print the validation table of the shipped metric (docs/metrics.md)")
    ap.add_argument("--validate-n", type=int, default=10000)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.validate:
        return validate(args.validate_n)
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)

    xtr, ytr = mnist("train")
    xva, yva = mnist("valid")
    xte, yte = mnist("test")
    net = MnistNet()
    steps_per_epoch = len(xtr) // args.batch
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch)

    t0 = time.time()
    for epoch in range(args.epochs):
        net.train()
        perm = torch.randperm(len(xtr), generator=g)
        total = 0.0
        for i in range(steps_per_epoch):
            idx = perm[i * args.batch:(i + 1) * args.batch]
            loss = F.cross_entropy(net(random_shift(xtr[idx], args.shift, g)), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        print(f"epoch {epoch + 1}/{args.epochs}: loss {total / steps_per_epoch:.4f}, "
              f"valid acc {evaluate(net, xva, yva):.4f}, {time.time() - t0:.0f} s", flush=True)
    train_seconds = time.time() - t0
    acc = {"train": evaluate(net, xtr, ytr), "valid": evaluate(net, xva, yva), "test": evaluate(net, xte, yte)}
    print(f"accuracy: {acc}", flush=True)

    from safetensors.torch import save_file

    os.makedirs(args.out, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    wpath = os.path.join(args.out, WEIGHTS_FILE)
    atomic_write(wpath, lambda tmp: save_file(state, tmp))

    # reference statistics of the test set
    fte, ftr, fva = all_features(net, xte), all_features(net, xtr), all_features(net, xva)
    mu, sigma = feature_stats(fte)
    atomic_write(os.path.join(args.out, REFERENCES["mnist-test"]),
                 lambda tmp: save_file({"mu": mu, "sigma": sigma, "n": torch.tensor(len(fte))}, tmp))

    # floors: n training images vs the test statistics (mean over up to 5 disjoint subsets)
    perm = torch.randperm(len(ftr), generator=torch.Generator().manual_seed(1))
    floors, spreads = {}, {}
    for n in FLOOR_SIZES:
        vals = []
        for j in range(min(5, len(ftr) // n)):
            m, S = feature_stats(ftr[perm[j * n:(j + 1) * n]])
            vals.append(frechet_from_stats(m, S, mu, sigma))
        floors[str(n)] = sum(vals) / len(vals)
        spreads[str(n)] = [min(vals), max(vals)]
        print(f"FD floor n={n}: {floors[str(n)]:.4f} (range {min(vals):.4f}..{max(vals):.4f})", flush=True)
    fd_valid = frechet_from_stats(*feature_stats(fva), mu, sigma)
    pr = knn_metrics(all_features(net, xte, "conv"), all_features(net, xtr[perm[:10000]], "conv"), k=3, k_density=5)
    print(f"FD valid(10k) vs test: {fd_valid:.4f}; train(10k) vs test on conv features, precision/recall "
          f"(k=3), density/coverage (k=5): {pr}", flush=True)

    with open(wpath, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    atomic_write_json(os.path.join(args.out, FLOOR_FILE), {
        "fd_train_vs_test": floors,
        "fd_train_vs_test_range": spreads,
        "fd_valid_vs_test_10000": fd_valid,
        "knn_metrics_train_vs_test_10000_conv": pr,
        "accuracy": acc,
        "train_seconds": round(train_seconds, 1),
        "threads": args.threads,
        "args": vars(args) | {"out": None},
        "weights_sha256": sha,
        "torch": torch.__version__,
        "platform": platform.platform(),
        "parameters": sum(p.numel() for p in net.parameters()),
    })
    for name in (WEIGHTS_FILE, REFERENCES["mnist-test"], FLOOR_FILE):
        os.chmod(os.path.join(args.out, name), 0o644)  # atomic_write's temporary files are private
    print(f"wrote {args.out} (weights sha256 {sha[:16]}..., training {train_seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
