"""The steering benchmarks' reports: markdown tables and compute-vs-quality curves (from the
CSV rows of :mod:`.steer_exact`)."""

from __future__ import annotations

import math
from typing import Sequence

from ..io import atomic_write, atomic_write_text
from .report_rows import Row, number, ok_rows, unique

__all__ = ["steer_exact_report", "equal_call_wins"]

#: the methods whose output targets the tilted distribution (the others maximise the reward)
TILT_METHODS = ("best-of-n", "fk", "tds", "dts")


def equal_call_wins(rows: Sequence[Row], base: str = "best-of-n") -> list[str]:
    """Lines saying, per problem and per total-call budget that ``base`` ran at (more than one
    candidate), which tilt-targeting methods beat it at no more calls on both the sliced W2 to
    the tilted target and the distance of their mean reward to the target's."""
    out = []
    ok = [r for r in ok_rows(rows) if int(number(r["particles"])) > 1 or r["method"] == "tds"]  # K = 1: the base sampler
    for p in unique(r["problem"] for r in ok):
        prs = [r for r in ok if r["problem"] == p]
        for b in sorted((r for r in prs if r["method"] == base), key=lambda r: number(r["nfe"])):
            n, target = number(b["nfe"]), number(b["reward_exact"])
            wins = []
            for m in unique(r["method"] for r in prs if r["method"] in TILT_METHODS and r["method"] != base):
                cand = [r for r in prs if r["method"] == m and number(r["nfe"]) <= n]
                if not cand:
                    continue
                r = max(cand, key=lambda r: number(r["nfe"]))
                if number(r["sliced_w2"]) < number(b["sliced_w2"]) and abs(number(r["reward"]) - target) < abs(number(b["reward"]) - target):
                    wins.append(f"{m} ({int(number(r['nfe']))} calls: W2 {number(r['sliced_w2']):.3f}, reward {number(r['reward']):.3f})")
            out.append(f"* {p}, {base} at {int(n)} calls (W2 {number(b['sliced_w2']):.3f}, reward {number(b['reward']):.3f}; "
                       f"target {target:.3f}): " + ("; ".join(wins) if wins else "no tilt-targeting method beats it on both"))
    return out


def _tables(rows: Sequence[Row]) -> list[str]:
    lines = []
    for p in unique(r["problem"] for r in rows):
        prs = [r for r in rows if r["problem"] == p]
        ok = ok_rows(prs)
        if not ok:
            continue
        f0 = ok[0]
        lines += [f"### {p}", "", f"floors: sliced W2 {number(f0['sliced_w2_floor']):.4f}, mode TV "
                  f"{number(f0['mode_tv_floor']):.4f}; the exact target's mean reward {number(f0['reward_exact']):.3f}", "",
                  "| method | particles | calls / sample | sliced W2 | mode TV | mean reward | log Z error |",
                  "|---|---|---|---|---|---|---|"]
        for r in prs:
            if r.get("status") != "ok":
                lines.append(f"| {r['method']} | {r['particles']} | - | {r.get('status')}: {r.get('message', '')} | | | |")
                continue
            lz = number(r.get("log_z_error", ""))
            lines.append(f"| {r['method']} | {r['particles']} | {int(number(r['nfe']))} | {number(r['sliced_w2']):.4f} | "
                         f"{number(r['mode_tv']):.3f} | {number(r['reward']):.3f} | {'' if math.isnan(lz) else f'{lz:+.3f}'} |")
        lines.append("")
    return lines


def _plot(rows: Sequence[Row], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = ok_rows(rows)
    problems = unique(r["problem"] for r in ok)
    methods = unique(r["method"] for r in ok)
    color = {m: plt.cm.tab10(i % 10) for i, m in enumerate(methods)}
    fig, axes = plt.subplots(2, len(problems), figsize=(3.8 * len(problems), 6.4), squeeze=False)
    for j, p in enumerate(problems):
        prs = [r for r in ok if r["problem"] == p]
        for m in unique(r["method"] for r in prs):
            pts = sorted((number(r["nfe"]), number(r["sliced_w2"]), number(r["reward"])) for r in prs if r["method"] == m)
            axes[0, j].plot([a for a, _, _ in pts], [b for _, b, _ in pts], marker="o", ms=3, label=m, color=color[m])
            axes[1, j].plot([a for a, _, _ in pts], [c for _, _, c in pts], marker="o", ms=3, label=m, color=color[m])
        axes[0, j].axhline(number(prs[0]["sliced_w2_floor"]), color="k", lw=0.8, ls=":")
        axes[1, j].axhline(number(prs[0]["reward_exact"]), color="k", lw=0.8, ls=":")
        axes[0, j].set(xscale="log", yscale="log", title=p, ylabel="sliced W2 to the tilted target")
        axes[1, j].set(xscale="log", xlabel="network calls per sample", ylabel="mean reward (target: dotted)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(8, len(labels)), fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def steer_exact_report(rows: Sequence[Row], prefix: str, command: str, wall: str = "") -> tuple[str, str]:
    """Write ``PREFIX.md`` and ``PREFIX.png``; returns their paths."""
    md, png = prefix + ".md", prefix + ".png"
    lines = ["# Steering on exact mixtures: every method against the exact tilted target", "",
             "Produced by:", "", f"    {command}", ""] + ([wall, ""] if wall else []) + [
             "Every method at its defaults, base sampler 20 network calls per trajectory, the same sample seeds; "
             "`calls / sample` is what the method counted (particles, candidates, rollouts and VJPs included). "
             "Sliced W2 and the mode-weight TV are measured against as many exact samples of the tilted "
             "target; the floors are those of a second exact set. `log Z error` is log of the mean estimate of "
             "Z = E_p[exp(r)] minus the exact log Z (linear tilts; the estimate is of the sampler's chain, so "
             "it carries the base sampler's discretisation bias too).", "",
             "## Who beats best-of-N at equal (or fewer) calls, on both sliced W2 and mean reward", "",
             "Among the methods that target the tilted distribution (best-of-n with its default tilted pick, fk, tds, "
             "dts), more than one candidate; \"mean reward\" counts as better when it is closer to the exact "
             "target's (a search overshoots it on purpose: `random-search`, `zero-order`, `path-search`, `dts*`, "
             "`rbf` and `flowchef` maximise the reward and are in the tables and the figure).", ""]
    lines += equal_call_wins(rows) + ["", "## Tables", ""] + _tables(rows)
    lines += [f"![distance and reward vs calls]({png.rsplit('/', 1)[-1]})", ""]
    atomic_write_text(md, "\n".join(lines))
    _plot(rows, png)
    return md, png
