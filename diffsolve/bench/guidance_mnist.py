"""The MNIST guidance benchmark: classifier-free guidance, Adaptive Guidance, classifier
guidance and training-free (universal) guidance toward each class 0..9, judged by the metric
network.

Each configuration draws ``per_class`` samples of every class (sample i of class c from seed
``SEED0 + 1000 c + i``: the same noise for every configuration, disjoint from the seeds Adaptive
Guidance's default was tuned and verified on) with dpm++2m at ``nfe`` calls (karras), and reports
the metric network's class accuracy, the Frechet distance to MNIST test (with the floor of as
many real images), the within-class diversity
(:func:`diffsolve.bench.mnist_runs.diversity`), the diffusion network's ROWS per sample (a CFG
call on a sample is 2 rows, a VJP through the network 1 more) and the auxiliary network's
evaluations per sample (the noisy classifier's forward+backward passes; the steering verifier's,
times its smoothing draws, for universal guidance), and the wall time.

* ``cfg``: :class:`~diffsolve.guidance.CFG` on the class-conditional model (scale 1 is the
  conditional model alone, 1 row per call);
* ``adaptive``: :class:`~diffsolve.guidance.AdaptiveGuidance` with its default (s_check, gamma),
  rows as counted by the wrapper (scale 1 is the conditional model: 1 row per call);
* ``classifier``: :class:`~diffsolve.guidance.ClassifierGuidance` on the *unconditional* model
  (null label) with the shipped noise-conditional classifier (scale 0 = the unconditional model);
* ``free``: :class:`~diffsolve.guidance.UniversalGuidance` on the unconditional model with the
  steering verifier's class reward (:func:`diffsolve.models.verifier.classifier_reward`).

Results are appended to a JSON list, one entry per finished configuration (resumable: finished
configurations are skipped).
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import torch

from ..guidance import CFG, AdaptiveGuidance, ClassifierGuidance, UniversalGuidance
from ..models import load_model
from ..noise import NoiseSource
from ..sample import sample
from .mnist_runs import Runs, judge

__all__ = ["DEFAULT_CONFIGS", "KINDS", "SEED0", "run_guidance_mnist", "guidance_mnist_report"]

KINDS = ("cfg", "adaptive", "classifier", "free")

#: (label, kind, scale, options)
DEFAULT_CONFIGS: tuple[tuple[str, str, float, dict], ...] = (
    ("cfg 1 (conditional model)", "cfg", 1.0, {}),
    ("cfg 1.25", "cfg", 1.25, {}),
    ("cfg 2", "cfg", 2.0, {}),
    ("adaptive 1 (conditional model)", "adaptive", 1.0, {}),
    ("adaptive 1.25", "adaptive", 1.25, {}),
    ("adaptive 2", "adaptive", 2.0, {}),
    ("unconditional (null label)", "classifier", 0.0, {}),
    ("classifier normalised 0.05, sine 1", "classifier", 0.05, {"normalise": True, "schedule": "sine", "gamma": 1.0}),
    ("classifier normalised 0.1", "classifier", 0.1, {"normalise": True}),
    ("classifier normalised 0.4", "classifier", 0.4, {"normalise": True}),
    ("universal 8", "free", 8.0, {}),
)
#: sample i of class c is drawn from seed SEED0 + 1000 c + i (Adaptive Guidance's default was
#: tuned on seeds 0..199 and verified on 1000..1199: disjoint)
SEED0 = 300_000


def _denoiser(model, kind: str, scale: float, opts: dict, labels: torch.Tensor):
    """The guided denoiser of one configuration and the labels it is called with."""
    if kind == "cfg":
        return CFG(model, scale, **opts), labels
    if kind == "adaptive":
        return AdaptiveGuidance(model, scale, **opts), labels
    if kind == "classifier":
        from ..models.noisy_classifier import load_noisy_classifier

        return ClassifierGuidance(model, load_noisy_classifier(), scale, **opts), labels
    if kind == "free":
        from ..models.verifier import class_rewards

        return UniversalGuidance(model, class_rewards(model, labels), scale, **opts), torch.full_like(labels, model.null_label)
    raise ValueError(f"unknown guidance kind {kind!r}; accepted: {', '.join(KINDS)}")


def _costs(den, kind: str, n: int, nfe: int, scale: float) -> tuple[float, float]:
    """(diffusion-network rows, auxiliary-network evaluations) per sample."""
    if kind == "cfg":
        return float(nfe if scale == 1.0 else 2 * nfe), 0.0
    if kind == "adaptive":
        return den.rows / n, 0.0
    if kind == "classifier":
        return float(nfe), float(den.classifier_calls)
    draws = max(getattr(r, "draws", 1) for r in den.reward.rewards)
    return float(nfe + den.vjps), float(den.vjps * draws)


def run_guidance_mnist(out_json: str, configs: Sequence[tuple] = DEFAULT_CONFIGS, *, nfe: int = 20,
                       per_class: int = 10, log=print) -> list[dict[str, Any]]:
    """Run (or resume) the configurations; returns every entry of ``out_json``."""
    runs = Runs(out_json, log)
    model = load_model("mnist")
    labels = torch.arange(10).repeat_interleave(per_class)
    seeds = [SEED0 + 1000 * c + i for c in range(10) for i in range(per_class)]
    for name, kind, scale, opts in configs:
        if name in runs.have:
            continue
        t0 = time.perf_counter()
        den, cond_labels = _denoiser(model, kind, scale, opts, labels)
        res = sample(den, NoiseSource.initial(seeds, model.shape), solver="dpm++2m", nfe=nfe, seeds=seeds,
                     cond={"labels": cond_labels})
        x = res.samples.float()
        q = judge(x, labels)
        rows, aux = _costs(den, kind, len(seeds), res.nfe, scale)
        entry = {"config": name, "kind": kind, "scale": scale, "options": opts, "nfe": res.nfe, "num": len(seeds),
                 "rows_per_sample": rows, "aux_per_sample": aux, **q, "seconds": time.perf_counter() - t0}
        if kind == "adaptive":
            entry.update(gamma=den.gamma, s_check=den.s_check if den.s_check < float("inf") else None, saved=den.saved)
        runs.add(entry)
    return runs.entries


def guidance_mnist_report(entries: Sequence[dict[str, Any]], prefix: str, command: str) -> str:
    """Write ``PREFIX.md`` (one row per configuration); returns its path."""
    from ..io import atomic_write_text

    ref = next((e for e in entries if e["config"] == "cfg 1.25"), None)
    lines = ["# Guidance on MNIST", "", "Produced by:", "", f"    {command}", "",
             "Labels 0..9, the same starting noises for every row, dpm++2m at the NFE shown, judged by the metric "
             "network (a network no method was guided by): class accuracy and Frechet distance to MNIST test over "
             "all classes' samples (the floor is the FD of as many real training images; FD is biased upward at "
             "small n: compare rows at equal n); diversity is the within-class spread of the metric network's "
             "features relative to real digits (1 = as diverse). `rows / sample` counts the diffusion network's "
             "rows (a guided CFG call is 2, a VJP through the network 1 more); `aux / sample` the auxiliary "
             "network's forward+backward passes (the noisy classifier for classifier guidance; the steering "
             "verifier times its 8 smoothing draws for universal guidance). CFG and adaptive guidance run the "
             "class-conditional model; classifier and universal guidance the unconditional one (null label).", "",
             "| configuration | NFE | rows / sample | aux / sample | samples | class accuracy | FD | FD / CFG 1.25's "
             "| FD floor | diversity | seconds |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    order = {c[0]: i for i, c in enumerate(DEFAULT_CONFIGS)}
    for e in sorted(entries, key=lambda e: order.get(e["config"], len(order))):  # a resumed file: the table's order
        ratio = f"{e['fd'] / ref['fd']:.2f}" if ref else "-"
        name = e["config"] + (f" (gamma {e['gamma']:g}, s_check {e['s_check'] or 'inf'}"
                              f", {100 * e['saved']:.0f}% of CFG's rows saved)" if e["kind"] == "adaptive" and e["scale"] != 1.0
                              else " (1 row per call)" if e["kind"] == "adaptive" else "")
        lines.append(f"| {name} | {e['nfe']} | {e['rows_per_sample']:.1f} | {e['aux_per_sample']:.0f} | {e['num']} | "
                     f"{100 * e['class_accuracy']:.1f}% | {e['fd']:.2f} | {ratio} | {e['fd_floor']:.2f} | "
                     f"{e['diversity']:.2f} | {e['seconds']:.0f} |")
    if ref:
        meet = [e["config"] for e in entries if e["kind"] in ("classifier", "free") and e["class_accuracy"] >= 0.95
                and e["fd"] <= 1.5 * ref["fd"]]
        lines += ["", f"Guidance of the unconditional model reaching >= 95% accuracy with FD <= 1.5 x CFG 1.25's "
                      f"({1.5 * ref['fd']:.1f}): {', '.join(meet) or 'none'}."]
    lines.append("")
    md = prefix + ".md"
    atomic_write_text(md, "\n".join(lines))
    return md
