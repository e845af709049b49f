"""Markdown reports and plots of the inverse-problem benchmarks (from their CSV rows).

* :func:`exact_report` -- per problem, sliced W2 / floor by method x NFE; the methods within
  1.5x of the floor; each method's bias at its best budget (weight TV, mean and variance errors);
  a log-log plot (one panel per problem).
* :func:`mnist_report` -- per task, PSNR / SSIM / both classifiers' accuracy / FD / spread per
  method and budget, and the headline comparisons (ours at 20 NFE vs deepinv at >= 100).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from ..io import atomic_write, atomic_write_text
from .report_rows import Row, number, ok_rows, unique

__all__ = ["exact_report", "mnist_report", "exact_summary", "mnist_summary"]

WITHIN = 1.5


def _fmt(x: float, digits: int = 3) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.{digits}g}"


def _problems(rows: Sequence[Row]) -> list[str]:
    """The problems of ``rows``: the default ones in their order first, then any others."""
    from .inverse_problems import DEFAULT_EXACT_PROBLEMS

    seen = unique(r["problem"] for r in rows)
    return [p for p in DEFAULT_EXACT_PROBLEMS if p in seen] + [p for p in seen if p not in DEFAULT_EXACT_PROBLEMS]


# -- exact --------------------------------------------------------------------------------------
def exact_summary(rows: Sequence[Row], within: float = WITHIN) -> dict[str, list[tuple[str, int, float]]]:
    """Per problem, the methods (not oracle / floor rows) whose sliced W2 is within ``within`` x
    the floor at some budget <= 1000: (method, smallest such NFE, its ratio)."""
    out: dict[str, list[tuple[str, int, float]]] = {}
    for p in _problems(rows):
        hits = {}
        for r in ok_rows(rows):
            if r["problem"] != p or ":" in r["method"] or int(r["budget"]) > 1000:
                continue
            ratio = number(r["w2_ratio"])
            if ratio <= within and (r["method"] not in hits or int(r["budget"]) < hits[r["method"]][0]):
                hits[r["method"]] = (int(r["budget"]), ratio)
        out[p] = sorted(((m, b, x) for m, (b, x) in hits.items()), key=lambda t: (t[1], t[2]))
    return out


def _exact_tables(rows: Sequence[Row]) -> list[str]:
    lines = []
    for p in _problems(rows):
        prs = [r for r in rows if r["problem"] == p]
        floor = next((r for r in prs if r["method"] == "exact:floor"), None)
        budgets = sorted({int(r["budget"]) for r in prs if r["method"] != "exact:floor"})
        head = prs[0]
        lines += [f"### {p}", "",
                  f"{head['dim']}-D, {head['n_meas']} measurement(s), sigma_y = {_fmt(number(head['sigma_y']))}; "
                  f"{head['num']} samples per cell; floor sliced W2 = {_fmt(number(floor['sliced_w2'])) if floor else '-'}, "
                  f"expected weight TV of exact samples = {_fmt(number(floor['weight_tv_floor'])) if floor else '-'}.", "",
                  "Sliced W2 / floor (`s`: skipped, see the CSV's message; `f`: failed):", "",
                  "| method | " + " | ".join(f"NFE {b}" for b in budgets) + " |",
                  "|---|" + "---:|" * len(budgets)]
        for m in unique(r["method"] for r in prs if r["method"] != "exact:floor"):
            cells = []
            for b in budgets:
                r = next((x for x in prs if x["method"] == m and int(x["budget"]) == b), None)
                if r is None:
                    cells.append("")
                elif r["status"] != "ok":
                    cells.append(r["status"][0])
                else:
                    x = number(r["w2_ratio"])
                    cells.append(f"**{_fmt(x)}**" if x <= WITHIN else _fmt(x))
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines += ["", "Bias at each method's best budget (weight TV: components' weights vs exact; mean error "
                  "/ sqrt(tr C); variance error relative):", "",
                  "| method | NFE | W2/floor | weight TV | mean err | var err |", "|---|---:|---:|---:|---:|---:|"]
        if floor:
            lines.append(f"| exact:floor | - | 1 | {_fmt(number(floor['weight_tv']))} | {_fmt(number(floor['mean_err']))} | "
                         f"{_fmt(number(floor['var_err']))} |")
        for m in unique(r["method"] for r in prs if r["method"] != "exact:floor"):
            ok = [r for r in ok_rows(prs) if r["method"] == m]
            if not ok:
                continue
            best = min(ok, key=lambda r: number(r["w2_ratio"]))
            lines.append(f"| {m} | {best['budget']} | {_fmt(number(best['w2_ratio']))} | {_fmt(number(best['weight_tv']))} | "
                         f"{_fmt(number(best['mean_err']))} | {_fmt(number(best['var_err']))} |")
        lines.append("")
    return lines


def _bias_table(rows: Sequence[Row]) -> list[str]:
    problems = _problems(rows)
    methods = unique(r["method"] for r in rows if r["method"] != "exact:floor")
    lines = ["| method | " + " | ".join(problems) + " |", "|---|" + "---:|" * len(problems)]
    for m in methods:
        cells = []
        for p in problems:
            ok = [r for r in ok_rows(rows) if r["problem"] == p and r["method"] == m]
            if not ok:
                cells.append("-")
                continue
            b = min(ok, key=lambda r: number(r["w2_ratio"]))
            cells.append(f"{_fmt(number(b['w2_ratio']))} ({b['budget']}), TV {_fmt(number(b['weight_tv']), 2)}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    floors = [next((r for r in rows if r["problem"] == p and r["method"] == "exact:floor"), None) for p in problems]
    lines.append("| exact:floor | " + " | ".join(f"1, TV {_fmt(number(f['weight_tv_floor']), 2)}" if f else "-"
                                                 for f in floors) + " |")
    return lines


def _exact_plot(rows: Sequence[Row], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = _problems(rows)
    cols = min(3, len(problems))
    nr = math.ceil(len(problems) / cols)
    fig, axes = plt.subplots(nr, cols, figsize=(4.2 * cols, 3.4 * nr), squeeze=False)
    methods = unique(r["method"] for r in rows if r["method"] != "exact:floor")
    color = {m: plt.cm.tab20(i % 20) for i, m in enumerate(methods)}  # one colour per method on every panel
    for ax, p in zip(axes.flat, problems):
        prs = [r for r in ok_rows(rows) if r["problem"] == p and r["method"] != "exact:floor"]
        for m in unique(r["method"] for r in prs):
            pts = sorted((int(r["budget"]), number(r["w2_ratio"])) for r in prs if r["method"] == m)
            ax.plot([b for b, _ in pts], [x for _, x in pts], "--" if m.startswith("oracle") else "-",
                    marker="o", ms=3, label=m, color=color[m])
        ax.axhline(1.0, color="k", lw=0.8)
        ax.axhline(WITHIN, color="k", lw=0.8, ls=":")
        ax.set(xscale="log", yscale="log", title=p, xlabel="NFE", ylabel="sliced W2 / floor")
    for ax in list(axes.flat)[len(problems):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=7)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def exact_report(rows: Sequence[Row], prefix: str, command: str, wall: str = "") -> tuple[str, str]:
    """Write ``PREFIX.md`` and ``PREFIX.png``; returns their paths."""
    summ = exact_summary(rows)
    lines = ["# Inverse problems on exact mixtures: posterior samplers vs the exact posterior", "",
             "Produced by:", "", f"    {command}", ""] + ([wall, ""] if wall else []) + [
             "Every registered method at its defaults (TDS: the particle count that spends the budget, "
             "`options` column) from the same seeds; `oracle:*` rows are our ODE solvers on the exact "
             "posterior denoiser (discretisation error alone). Sliced W2 is measured against 4x the cell's "
             "samples of the exact posterior and divided by the floor, the mean over 8 exact sets of the "
             "cell's size; one set of that size scatters around the floor by tens of percent (the oracle rows, "
             "whose samples are one deterministic transport of the same noise at every NFE, show that scatter "
             "once they converge). Cells over the per-cell cost cap are `over-cap` rows in the CSV.", "",
             f"## Within {WITHIN}x of the sliced-W2 floor at <= 1000 NFE", ""]
    for p, hits in summ.items():
        lines.append(f"* {p}: " + (", ".join(f"{m} (NFE {b}: {x:.2f}x)" for m, b, x in hits) if hits else "none of our methods"))
    lines += ["", "## Bias: each method's best sliced W2 / floor over the budgets run (its NFE), and its "
              "component-weight TV there", ""] + _bias_table(rows) + ["", "## Tables", ""] + _exact_tables(rows)
    md, png = prefix + ".md", prefix + ".png"
    lines += [f"![sliced W2 / floor vs NFE]({png.rsplit('/', 1)[-1]})", ""]
    atomic_write_text(md, "\n".join(lines))
    _exact_plot(rows, png)
    return md, png


# -- MNIST --------------------------------------------------------------------------------------
def mnist_summary(rows: Sequence[Row], ours_nfe: int = 20, peer_min: int = 100) -> dict[str, dict[str, Any]]:
    """Per task: our best method at ``ours_nfe`` and deepinv's best at >= ``peer_min`` NFE
    (counted), by PSNR (unconditional group)."""
    out = {}
    for t in unique(r["task"] for r in rows):
        ok = [r for r in ok_rows(rows) if r["task"] == t and r["group"] == "uncond"]
        ours = [r for r in ok if ":" not in r["method"] and int(r["budget"]) == ours_nfe]
        peers = [r for r in ok if r["method"].startswith("deepinv:") and int(r["nfe"] or 0) >= peer_min]
        best = lambda rs: max(rs, key=lambda r: number(r["psnr"])) if rs else None  # noqa: E731
        out[t] = {"ours": best(ours), "peer": best(peers)}
    return out


def mnist_report(rows: Sequence[Row], prefix: str, command: str, figures: Sequence[str] = (), wall: str = "",
                 notes: Sequence[str] = ()) -> str:
    """Write ``PREFIX.md``; returns its path."""
    summ = mnist_summary(rows)
    lines = ["# Inverse problems on MNIST: the shipped prior, our methods and deepinv's", "",
             "Produced by:", "", f"    {command}", ""] + ([wall, ""] if wall else []) + list(notes) + [
             "", "PSNR / SSIM in [0, 1] pixel units against the truth; `acc shipped`: the shipped CNN; "
             "`acc indep`: an independent MLP fitted here (scikit-learn, not shipped); FD: shipped features, "
             "biased upward at this n; spread: mean per-pixel std of 4 posterior samples per measurement "
             "(8 measurements), [0, 1] units. NFE is counted at the network (a VJP counts as one).", "",
             "## Ours at 20 NFE vs deepinv at >= 100 NFE (PSNR, unconditional)", "",
             "| task | ours (best at 20) | PSNR | deepinv (best >= 100) | PSNR |", "|---|---|---:|---|---:|"]
    for t, s in summ.items():
        o, p = s["ours"], s["peer"]
        lines.append(f"| {t} | {o['method'] if o else '-'} | {_fmt(number(o['psnr']) if o else math.nan, 4)} | "
                     f"{(p['method'] + ' @ ' + p['nfe']) if p else '-'} | {_fmt(number(p['psnr']) if p else math.nan, 4)} |")
    lines += ["", "## Tables", ""]
    for t in unique(r["task"] for r in rows):
        lines += [f"### {t}", "", "| group | method | budget | NFE | PSNR | SSIM | acc shipped | acc indep | FD | spread |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in (r for r in rows if r["task"] == t):
            if r["status"] != "ok":
                lines.append(f"| {r['group']} | {r['method']} | {r['budget']} | {r['status']}: "
                             f"{r['message'][:90]} | | | | | | |")
                continue
            lines.append(f"| {r['group']} | {r['method']} | {r['budget']} | {r['nfe']} | {_fmt(number(r['psnr']), 4)} | "
                         f"{_fmt(number(r['ssim']))} | {_fmt(number(r['acc_shipped']))} | {_fmt(number(r['acc_independent']))} | "
                         f"{_fmt(number(r['fd']))} | {_fmt(number(r['spread']))} |")
        lines.append("")
    for f in figures:
        lines += [f"![{f}]({f})", ""]
    md = prefix + ".md"
    atomic_write_text(md, "\n".join(lines))
    return md
