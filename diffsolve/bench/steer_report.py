"""The steering benchmarks' reports: markdown tables and compute-vs-quality curves (from the
CSV rows of :mod:`.steer_exact`)."""

from __future__ import annotations

import math
from typing import Sequence

from ..io import atomic_write, atomic_write_text

__all__ = ["steer_exact_report", "equal_call_wins"]

Row = dict[str, str]


def _f(v: str) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _order(seq) -> list[str]:
    out: list[str] = []
    for x in seq:
        if x not in out:
            out.append(x)
    return out


def _ok(rows: Sequence[Row]) -> list[Row]:
    return [r for r in rows if r.get("status") == "ok"]


#: the methods whose output targets the tilted distribution (the others maximise the reward)
TILT_METHODS = ("best-of-n", "fk", "tds", "dts")


def equal_call_wins(rows: Sequence[Row], base: str = "best-of-n") -> list[str]:
    """Lines saying, per problem and per total-call budget that ``base`` ran at (more than one
    candidate), which tilt-targeting methods beat it at no more calls on both the sliced W2 to
    the tilted target and the distance of their mean reward to the target's."""
    out = []
    ok = [r for r in _ok(rows) if int(_f(r["particles"])) > 1 or r["method"] == "tds"]  # K = 1: the base sampler
    for p in _order(r["problem"] for r in ok):
        prs = [r for r in ok if r["problem"] == p]
        for b in sorted((r for r in prs if r["method"] == base), key=lambda r: _f(r["nfe"])):
            n, target = _f(b["nfe"]), _f(b["reward_exact"])
            wins = []
            for m in _order(r["method"] for r in prs if r["method"] in TILT_METHODS and r["method"] != base):
                cand = [r for r in prs if r["method"] == m and _f(r["nfe"]) <= n]
                if not cand:
                    continue
                r = max(cand, key=lambda r: _f(r["nfe"]))
                if _f(r["sliced_w2"]) < _f(b["sliced_w2"]) and abs(_f(r["reward"]) - target) < abs(_f(b["reward"]) - target):
                    wins.append(f"{m} ({int(_f(r['nfe']))} calls: W2 {_f(r['sliced_w2']):.3f}, reward {_f(r['reward']):.3f})")
            out.append(f"* {p}, {base} at {int(n)} calls (W2 {_f(b['sliced_w2']):.3f}, reward {_f(b['reward']):.3f}; "
                       f"target {target:.3f}): " + ("; ".join(wins) if wins else "no tilt-targeting method beats it on both"))
    return out


def _tables(rows: Sequence[Row]) -> list[str]:
    lines = []
    for p in _order(r["problem"] for r in rows):
        prs = [r for r in rows if r["problem"] == p]
        ok = _ok(prs)
        if not ok:
            continue
        f0 = ok[0]
        lines += [f"### {p}", "", f"floors: sliced W2 {_f(f0['sliced_w2_floor']):.4f}, mode TV "
                  f"{_f(f0['mode_tv_floor']):.4f}; the exact target's mean reward {_f(f0['reward_exact']):.3f}", "",
                  "| method | particles | calls / sample | sliced W2 | mode TV | mean reward | log Z error |",
                  "|---|---|---|---|---|---|---|"]
        for r in prs:
            if r.get("status") != "ok":
                lines.append(f"| {r['method']} | {r['particles']} | - | {r.get('status')}: {r.get('message', '')} | | | |")
                continue
            lz = _f(r.get("log_z_error", ""))
            lines.append(f"| {r['method']} | {r['particles']} | {int(_f(r['nfe']))} | {_f(r['sliced_w2']):.4f} | "
                         f"{_f(r['mode_tv']):.3f} | {_f(r['reward']):.3f} | {'' if math.isnan(lz) else f'{lz:+.3f}'} |")
        lines.append("")
    return lines


def _plot(rows: Sequence[Row], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = _ok(rows)
    problems = _order(r["problem"] for r in ok)
    methods = _order(r["method"] for r in ok)
    color = {m: plt.cm.tab10(i % 10) for i, m in enumerate(methods)}
    fig, axes = plt.subplots(2, len(problems), figsize=(3.8 * len(problems), 6.4), squeeze=False)
    for j, p in enumerate(problems):
        prs = [r for r in ok if r["problem"] == p]
        for m in _order(r["method"] for r in prs):
            pts = sorted((_f(r["nfe"]), _f(r["sliced_w2"]), _f(r["reward"])) for r in prs if r["method"] == m)
            axes[0, j].plot([a for a, _, _ in pts], [b for _, b, _ in pts], marker="o", ms=3, label=m, color=color[m])
            axes[1, j].plot([a for a, _, _ in pts], [c for _, _, c in pts], marker="o", ms=3, label=m, color=color[m])
        axes[0, j].axhline(_f(prs[0]["sliced_w2_floor"]), color="k", lw=0.8, ls=":")
        axes[1, j].axhline(_f(prs[0]["reward_exact"]), color="k", lw=0.8, ls=":")
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
