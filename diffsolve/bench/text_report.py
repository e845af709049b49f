"""The text benchmark's report: ``PREFIX.md`` tables and ``PREFIX-exact.png`` /
``PREFIX-model.png`` plots, made from the CSV rows of :mod:`diffsolve.bench.text`.

The equal-quality comparison takes the ancestral sampler (``mdlm``) at ``nfe = length / 2`` as
the quality to match: on the model part, the AR reference's NLL of its samples (within one
standard error of it or lower) with the unigram entropy within 5% of real text (a lower NLL
bought by collapsing into repetition does not count); on the exact part, the NLL gap (bias) within one standard error and the bigram KL no larger
than mdlm's plus the exact samples' floor (a decoder with a small NLL gap but the wrong
bigram law does not count).
For each other sampler it reports the cheapest cell that matches, with its calls, tokens per
call and wall time.
"""

from __future__ import annotations

import math
from typing import Sequence

from ..io import atomic_write, atomic_write_text

__all__ = ["write_text_report", "equal_quality", "ENTROPY_TOL"]

ENTROPY_TOL = 0.05
Row = dict


def _f(v) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _fmt(v, digits: int = 3) -> str:
    x = _f(v)
    return "-" if x is None else f"{x:.{digits}g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def _ok(rows: Sequence[Row]) -> list[Row]:
    return [r for r in rows if r.get("status") == "ok" and r.get("label") != "reference"]


def _labels(rows: Sequence[Row]) -> list[str]:
    seen: list[str] = []
    for r in rows:
        if r["label"] not in seen:
            seen.append(r["label"])
    return seen


def equal_quality(rows: Sequence[Row], part: str) -> tuple[Row | None, list[tuple[str, Row | None]]]:
    """The target cell (mdlm at length/2) and, per other label, the cheapest matching cell."""
    ok = _ok(rows)
    ref = next((r for r in rows if r.get("label") == "reference"), None)
    length = int(ok[0]["length"]) if ok else 0
    target = next((r for r in ok if r["label"] == "mdlm" and _f(r["nfe"]) == length / 2), None)
    if target is None:
        return None, []
    if part == "model":
        bound = _f(target["gen_nll"]) + _f(target["gen_nll_se"])
        h_real = _f(ref["unigram_entropy"]) if ref else None

        def good(r: Row) -> bool:
            h = _f(r["unigram_entropy"])
            return _f(r["gen_nll"]) is not None and _f(r["gen_nll"]) <= bound and (
                h_real is None or abs(h - h_real) <= ENTROPY_TOL * h_real)
    else:
        bound = abs(_f(target["nll_gap"])) + _f(target["nll_gap_se"])
        kl_bound = _f(target["bigram_kl"]) + (_f(ref["bigram_kl"]) if ref else 0.0)  # + the exact samples' floor

        def good(r: Row) -> bool:
            return _f(r["nll_gap"]) is not None and abs(_f(r["nll_gap"])) <= bound and _f(r["bigram_kl"]) <= kl_bound
    out = []
    for lab in _labels(ok):
        if lab == "mdlm":
            continue
        hits = sorted((r for r in ok if r["label"] == lab and good(r)), key=lambda r: _f(r["calls"]))
        out.append((lab, hits[0] if hits else None))
    return target, out


def _exact_table(rows: Sequence[Row]) -> list[str]:
    lines = ["| sampler | nfe | calls | tokens/call | NLL gap (nats/char) | ± se | bigram KL | unigram KL |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"| {r['label']} | {r['nfe'] or 'adaptive'} | {r['status']}: {r['message'][:80]} | | | | | |")
            continue
        lines.append(f"| {r['label']} | {r['nfe'] or ('-' if r['label'] == 'reference' else 'adaptive')} | "
                     f"{r['calls'] or '-'} | {_fmt(r['tokens_per_call'])} | {_fmt(r['nll_gap'])} | "
                     f"{_fmt(r['nll_gap_se'], 2)} | {_fmt(r['bigram_kl'])} | {_fmt(r['unigram_kl'])} |")
    return lines


def _model_table(rows: Sequence[Row]) -> list[str]:
    lines = ["| sampler | nfe | calls | tokens/call | AR NLL | ± se | unigram H | dist-2 | dist-3 | dist-4 | "
             "KL1 | KL2 | KL3 | s | chars/s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"| {r['label']} | {r['nfe'] or 'adaptive'} | {r['status']}: {r['message'][:80]} |" + " |" * 12)
            continue
        secs = _f(r["seconds"])
        cps = _f(r["num"]) * _f(r["length"]) / secs if secs else None
        lines.append(f"| {r['label']} | {r['nfe'] or ('-' if r['label'] == 'reference' else 'adaptive')} | "
                     f"{r['calls'] or '-'} | {_fmt(r['tokens_per_call'])} | {_fmt(r['gen_nll'], 4)} | "
                     f"{_fmt(r['gen_nll_se'], 2)} | {_fmt(r['unigram_entropy'], 4)} | {_fmt(r['distinct_2'])} | "
                     f"{_fmt(r['distinct_3'])} | {_fmt(r['distinct_4'])} | {_fmt(r['kl_1'])} | {_fmt(r['kl_2'])} | "
                     f"{_fmt(r['kl_3'])} | {_fmt(secs)} | {_fmt(cps, 4) if cps else '-'} |")
    return lines


def _plot(rows: Sequence[Row], part: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = _ok(rows)
    ref = next((r for r in rows if r.get("label") == "reference"), None)
    panels = [("nll_gap", "NLL gap to the chain's entropy (nats/char)"), ("bigram_kl", "bigram KL")] \
        if part == "exact" else [("gen_nll", "AR reference NLL (nats/char)"), ("unigram_entropy", "unigram entropy (nats)")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    labels = _labels(ok)
    color = {m: plt.cm.tab20(i % 20) for i, m in enumerate(labels)}
    for ax, (col, name) in zip(axes, panels):
        for lab in labels:
            pts = sorted((_f(r["tokens_per_call"]), _f(r[col])) for r in ok if r["label"] == lab and _f(r[col]) is not None)
            if pts:
                ax.plot([a for a, _ in pts], [b for _, b in pts], marker="o", ms=3, label=lab, color=color[lab])
        if ref is not None and _f(ref.get(col)) is not None:
            ax.axhline(_f(ref[col]), color="k", lw=0.8, ls="--", label="exact samples" if part == "exact" else "real text")
        ax.set(xscale="log", xlabel="tokens per network call (per sample)", ylabel=name)
    handles, labs = axes[0].get_legend_handles_labels()
    fig.legend(handles, labs, loc="lower center", ncol=6, fontsize=7)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def write_text_report(parts: dict[str, Sequence[Row]], prefix: str, commands: Sequence[str], notes: str = "") -> str:
    """Write ``PREFIX.md`` (+ one plot per part); returns the markdown path."""
    lines = ["# Masked diffusion for text: every sampler on the exact chain and the trained model", "",
             "Produced by:", ""] + [f"    {c}" for c in commands] + [""] + ([notes, ""] if notes else [])
    for part, rows in parts.items():
        if not rows:
            continue
        import os
        png = f"{prefix}-{part}.png"
        _plot(rows, part, png)
        r0 = rows[0]
        if part == "exact":
            lines += ["## Bias on the exact chain", "",
                      f"The bigram chain fitted to the training plays (72 characters), length {r0['length']}, "
                      f"{r0['num']} samples per row, seeds 0..{int(r0['num']) - 1}. NLL gap: the samples' NLL "
                      "per character under the chain minus the chain's exact entropy per character (0 for exact "
                      "samples; negative = too likely, i.e. too little diversity). KL: empirical bigram / unigram "
                      "law of the samples against the chain's exact law (the `reference` row is exact samples: "
                      "the floor at this sample size).", "", f"![bias vs tokens per call]({os.path.basename(png)})", ""]
            lines += _exact_table(rows)
        else:
            lines += ["## The trained Shakespeare model", "",
                      f"The shipped `shakespeare` masked model, length {r0['length']}, {r0['num']} samples per row "
                      "(seeds 0..31), no prompt. AR NLL: the shipped `shakespeare-ar` reference's NLL per character of "
                      "the samples; unigram H, dist-n (distinct n-grams / all n-grams) and n-gram KL to held-out "
                      "text; the `reference` row is real held-out text windows scored the same way. Seconds are "
                      "wall time on this CPU (one torch thread, shared machine).", "",
                      f"![quality vs tokens per call]({os.path.basename(png)})", ""]
            lines += _model_table(rows)
        target, eq = equal_quality(rows, part)
        if target is not None:
            what = ("AR NLL <= %.3f (mdlm at nfe=%s: %.3f + 1 se) and unigram entropy within %d%% of real text"
                    % (_f(target["gen_nll"]) + _f(target["gen_nll_se"]), target["nfe"], _f(target["gen_nll"]),
                       round(ENTROPY_TOL * 100)) if part == "model" else
                    "|NLL gap| <= %.3f (mdlm at nfe=%s: |%.3f| + 1 se) and bigram KL <= mdlm's + the exact samples' floor"
                    % (abs(_f(target["nll_gap"])) + _f(target["nll_gap_se"]), target["nfe"], _f(target["nll_gap"])))
            lines += ["", f"### Equal quality ({part}): the cheapest cell of each sampler with {what}", "",
                      "| sampler | nfe | calls | tokens/call | s | vs mdlm calls | vs mdlm time |",
                      "|---|---:|---:|---:|---:|---:|---:|",
                      f"| mdlm (target) | {target['nfe']} | {target['calls']} | {_fmt(target['tokens_per_call'])} | "
                      f"{_fmt(target['seconds'])} | 1 | 1 |"]
            for lab, r in eq:
                if r is None:
                    lines.append(f"| {lab} | - | never matches in the cells run | | | | |")
                else:
                    lines.append(f"| {lab} | {r['nfe'] or 'adaptive'} | {r['calls']} | {_fmt(r['tokens_per_call'])} | "
                                 f"{_fmt(r['seconds'])} | {_fmt(_f(r['calls']) / _f(target['calls']))} | "
                                 f"{_fmt(_f(r['seconds']) / _f(target['seconds']))} |")
        lines.append("")
    path = prefix + ".md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
