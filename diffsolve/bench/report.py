"""Markdown tables and a log-log plot from sweep CSVs (:mod:`diffsolve.bench.store`).

For every model (with its path, prediction, batch and seeds stated next to the numbers):

* the reference's own error (RK4 against dopri5, from the same noise) and the floors of the
  distribution metrics (two exact sample sets of the batch size);
* a summary: at each NFE, our best configuration against the best peer configuration (RMS
  error against the reference, mean over seeds) and their ratio;
* the full table of deterministic fixed-budget methods (rows) by NFE (columns), the best
  entry of each column in bold;
* adaptive methods (tolerance, counted NFE, error), stochastic samplers (distribution metrics
  only: their RMS distance to the ODE solution is not an error), and the skipped or failed
  configurations with the reason.

Example::

    >>> from diffsolve.bench.report import fmt_err
    >>> fmt_err(0.000123456), fmt_err(float("nan"))
    ('1.23e-04', 'nan')
"""

from __future__ import annotations

import math
import re
import os
from collections import defaultdict
from typing import Iterable, Sequence

from ..io import atomic_write, atomic_write_text
from .store import read_rows

__all__ = ["write_report", "render_markdown", "plot_errors", "load_rows", "aggregate", "fmt_err"]

#: NFEs shown in the distribution-metric table
DIST_NFES = (5, 10, 20)


def fmt_err(v: float | None) -> str:
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf"
    return f"{v:.2e}"


def _f(s: str) -> float | None:
    if s in ("", None):
        return None
    try:
        return float(s)
    except ValueError:
        return None


def load_rows(csvs: Iterable[str]) -> list[dict[str, str]]:
    rows = []
    for c in csvs:
        rows.extend(read_rows(c))
    return rows


def _mean(vals: Sequence[float]) -> float:
    return sum(vals) / len(vals) if vals else float("nan")


def aggregate(rows: list[dict[str, str]], metric: str = "rms") -> dict:
    """{(model, method, budget): dict(value=mean over seeds | 'err' | 'nan', nfe=mean NFE, n=seeds, row=a row)}."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r["model"], r["method"], r["budget"])].append(r)
    out = {}
    for k, rs in groups.items():
        status = {r["status"] for r in rs}
        vals = [_f(r[metric]) for r in rs if r["status"] == "ok" and _f(r[metric]) is not None]
        nfes = [_f(r["nfe"]) for r in rs if _f(r["nfe"]) is not None]
        if "error" in status:
            v = "err"
        elif "skipped" in status:
            v = "skip"
        elif "nonfinite" in status:
            v = float("nan")
        else:
            v = _mean(vals) if vals else None
        out[k] = {"value": v, "nfe": _mean(nfes) if nfes else None, "n": len(rs), "row": rs[0],
                  "seeds": sorted({int(r["seed"]) for r in rs})}
    return out


def _label(row: dict[str, str]) -> str:
    if row["lib"] == "diffsolve":
        opt = f" {{{row['options']}}}" if row["options"] else ""
        return f"diffsolve {row['solver']}{opt} [{row['schedule']}]"
    return f"{row['lib']} {row['solver']}"


def _is_num(v) -> bool:
    return isinstance(v, float) and math.isfinite(v)


#: the configuration ``diffsolve.sample`` used by default before ``solver="auto"``
OLD_DEFAULT = "diffsolve:dpm++2m[karras]"


def _default_and_tuned(fixed: dict, nfes: list[int], best_peer: dict) -> list[str]:
    """The table of what a user gets: ``auto`` (the default) and tuned plans against the old
    default and the best peer configuration (picked afterwards, per NFE)."""
    from .methods import AUTO, TUNED

    if AUTO not in fixed and TUNED not in fixed:
        return []
    val = lambda meth, n: fixed.get(meth, {}).get(n, {}).get("value")  # noqa: E731
    cell = lambda v: fmt_err(v) if _is_num(v) else "—"  # noqa: E731
    ratio = lambda a, b: f"{a / b:.2f}" if _is_num(a) and _is_num(b) and b > 0 else "—"  # noqa: E731
    out = ["#### What a user gets: `auto` (the default) and a tuned plan, against the old default and the best peer",
           "", "`auto` is `solver=\"auto\"` (chosen from the NFE and the path alone); *tuned* is a plan fitted by "
           "`diffsolve.tune` (LD3) to this model on samples of its own noise, never the noise evaluated here "
           "(how many, and its cost, in the last column); the old default is `dpm++2m` on `karras`; the best peer "
           "is the best of every peer configuration at that NFE, picked afterwards.", "",
           "| NFE | auto | tuned | old default | best peer | auto / best peer | tuned / best peer | tuning cost |",
           "|---:|---:|---:|---:|---:|---:|---:|---|"]
    for n in nfes:
        a, t, d = val(AUTO, n), val(TUNED, n), val(OLD_DEFAULT, n)
        p = best_peer.get(n, (None,))[0]
        e = fixed.get(TUNED, {}).get(n)
        cost = ""
        m = re.search(r"on (\d+) samples .*?: (\d+) calls, (\d+) s", e["row"].get("message", "")) if e else None
        if m:
            cost = f"{m.group(3)} s ({m.group(2)} calls of {m.group(1)} samples)"
        out.append(f"| {n} | {cell(a)} | {cell(t)} | {cell(d)} | {cell(p)} | {ratio(a, p)} | {ratio(t, p)} | {cost} |")
    return out + [""]


def _model_section(model: str, rows: list[dict[str, str]]) -> tuple[list[str], dict]:
    agg = aggregate(rows, "rms")
    r0 = rows[0]
    seeds = sorted({int(r["seed"]) for r in rows})
    ref = [r for r in rows if r["kind"] == "reference" and r["status"] == "ok"]
    floor = [r for r in rows if r["kind"] == "floor" and r["status"] == "ok"]
    exact = not any(r["kind"] == "floor" and r["status"] == "skipped" for r in rows)  # trained: no exact samples
    net = (f"exact `{r0['prediction']}`-prediction network" if exact else
           f"trained `{r0['prediction']}`-prediction network (the shipped checkpoint)")
    lines = [f"### {model}", "",
             f"Path `{r0['path']}`, {net}, batch {r0['batch']} per seed, "
             f"seeds {seeds}; every method starts from the same noise of each seed. Errors are RMS distances to the "
             f"reference solution from the same noise (mean over seeds).", ""]
    if ref:
        worst = max(_f(r["rms"]) for r in ref)
        lines.append(f"* **Reference**: {ref[0]['message']}. Reference error (RMS, worst seed): **{fmt_err(worst)}**.")
    if floor:
        lines.append(f"* **Floors** (two exact sets of {r0['batch']} samples, mean over seeds): sliced W2 "
                     f"{fmt_err(_mean([_f(r['sliced_w2']) for r in floor]))}, MMD^2 "
                     f"{fmt_err(_mean([_f(r['mmd']) for r in floor]))}, mode-weight TV "
                     f"{fmt_err(_mean([_f(r['mode_tv']) for r in floor]))} (exact expectation).")
    lines.append("")

    fixed = defaultdict(dict)  # method -> budget -> entry
    for (m, meth, b), e in agg.items():
        if m == model and e["row"]["kind"] == "fixed":
            fixed[meth][int(float(b))] = e
    nfes = sorted({n for d in fixed.values() for n in d})
    best_ours, best_peer = {}, {}
    for meth, d in fixed.items():
        lib = d[next(iter(d))]["row"]["lib"]
        for n, e in d.items():
            v = e["value"]
            if not _is_num(v):
                continue
            tgt = best_ours if lib == "diffsolve" else best_peer
            if n not in tgt or v < tgt[n][0]:
                tgt[n] = (v, meth, e["row"])

    # summary
    lines += ["#### Best of ours against the best peer configuration, per NFE", "",
              "| NFE | best diffsolve (configuration) | RMS | best peer (configuration) | RMS | peer / ours |",
              "|---:|---|---:|---|---:|---:|"]
    for n in nfes:
        o, p = best_ours.get(n), best_peer.get(n)
        ratio = f"{p[0] / o[0]:.2f}" if o and p and o[0] > 0 else "—"
        lines.append(f"| {n} | {_label(o[2]) if o else '—'} | {fmt_err(o[0]) if o else '—'} | "
                     f"{_label(p[2]) if p else '—'} | {fmt_err(p[0]) if p else '—'} | {ratio} |")
    lines.append("")
    lines += _default_and_tuned(fixed, nfes, best_peer)

    # full table
    def sort_key(meth):
        row = fixed[meth][next(iter(fixed[meth]))]["row"]
        return (row["lib"] != "diffsolve", row["lib"], row["solver"], row["options"], row["schedule"])

    lines += ["<details><summary>All deterministic fixed-budget configurations (RMS error by NFE; best per "
              "column in bold; — = budget not reachable by the method's NFE rule)</summary>", "",
              "| method | " + " | ".join(str(n) for n in nfes) + " |",
              "|---|" + "---:|" * len(nfes)]
    col_best = {n: min((e["value"] for d in fixed.values() for k, e in d.items() if k == n and _is_num(e["value"])),
                       default=None) for n in nfes}
    for meth in sorted(fixed, key=sort_key):
        d = fixed[meth]
        cells = []
        for n in nfes:
            e = d.get(n)
            if e is None:
                cells.append("—")
                continue
            s = fmt_err(e["value"])
            if _is_num(e["value"]) and e["value"] == col_best[n]:
                s = f"**{s}**"
            cells.append(s)
        lines.append(f"| {_label(d[next(iter(d))]['row'])} | " + " | ".join(cells) + " |")
    lines += ["", "</details>", ""]

    # adaptive
    adapt = [(meth, b, e) for (m, meth, b), e in agg.items() if m == model and e["row"]["kind"] == "adaptive"]
    if adapt:
        lines += ["#### Adaptive step size (tolerance rtol, atol = rtol/10; NFE counted, mean over seeds)", "",
                  "| method | rtol | NFE | RMS |", "|---|---:|---:|---:|"]
        for meth, b, e in sorted(adapt, key=lambda t: (_label(t[2]["row"]), -float(t[1]))):
            nfe = f"{e['nfe']:.1f}" if e["nfe"] is not None else "—"
            lines.append(f"| {_label(e['row'])} | {b} | {nfe} | {fmt_err(e['value'])} |")
        lines.append("")

    # distribution metrics
    dist = {met: aggregate([r for r in rows if r["model"] == model], met) for met in ("sliced_w2", "mmd", "mode_tv")}
    stoch = sorted({meth for (m, meth, b), e in agg.items() if m == model and e["row"]["kind"] == "stochastic"})
    show = [n for n in DIST_NFES if n in nfes]
    if show and floor:
        lines += ["#### Distribution metrics against exact samples (mean over seeds; compare with the floors)", "",
                  "| method | NFE | sliced W2 | MMD^2 | mode TV |", "|---|---:|---:|---:|---:|"]
        fl = {met: _mean([_f(r[met]) for r in floor]) for met in ("sliced_w2", "mmd", "mode_tv")}
        lines.append(f"| *floor: two exact sets* | — | {fmt_err(fl['sliced_w2'])} | {fmt_err(fl['mmd'])} | "
                     f"{fmt_err(fl['mode_tv'])} |")
        picks = []
        for n in show:
            for best in (best_ours, best_peer):
                if n in best:
                    picks.append((best[n][1], n))
            for meth in stoch:
                picks.append((meth, n))
        for meth, n in picks:
            key = (model, meth, str(n))
            if key not in dist["sliced_w2"]:
                continue
            e = dist["sliced_w2"][key]
            tag = " (stochastic)" if e["row"]["kind"] == "stochastic" else ""
            lines.append(f"| {_label(e['row'])}{tag} | {n} | {fmt_err(e['value'])} | "
                         f"{fmt_err(dist['mmd'][key]['value'])} | {fmt_err(dist['mode_tv'][key]['value'])} |")
        lines.append("")

    # image metrics of trained models (MNIST-shaped samples: the shipped feature network)
    fd, acc = aggregate(rows, "frechet"), aggregate(rows, "class_acc")  # rows: this model's
    if any(_is_num(e["value"]) for e in fd.values()):
        lines += [f"#### Image metrics of the best configurations ({r0['batch']} samples a seed; the Frechet distance "
                  f"of so few samples is dominated by its small-sample bias: compare rows, and see "
                  f"`diffsolve.metrics.frechet_floor({r0['batch']})` = real images of that count)", "",
                  "| method | NFE | RMS | Frechet distance | class accuracy |", "|---|---:|---:|---:|---:|"]
        for n in nfes:
            for best in (best_ours, best_peer):
                if n in best:
                    key = (model, best[n][1], str(n))
                    f_, a_ = fd.get(key), acc.get(key)
                    f_s = f"{f_['value']:.1f}" if f_ and _is_num(f_["value"]) else "—"
                    a_s = f"{100 * a_['value']:.1f}%" if a_ and _is_num(a_["value"]) else "—"
                    lines.append(f"| {_label(best[n][2])} | {n} | {fmt_err(best[n][0])} | {f_s} | {a_s} |")
        lines.append("")

    # skipped / failed
    bad = sorted({(r["method"], r["status"], r["message"]) for r in rows if r["status"] not in ("ok",)})
    if bad:
        lines += ["#### Skipped or failed configurations", ""]
        seen = set()
        for meth, st, msg in bad:
            if (meth, st) in seen:
                continue
            seen.add((meth, st))
            budgets = sorted({r["budget"] for r in rows if r["method"] == meth and r["status"] == st},
                             key=lambda b: float(b))
            lines.append(f"* `{meth}` — {st} at budgets {', '.join(budgets)}: {msg}")
        lines.append("")
    return lines, {"best_ours": best_ours, "best_peer": best_peer, "fixed": fixed,
                   "ref": max((_f(r["rms"]) for r in ref), default=None)}


def render_markdown(rows: list[dict[str, str]], command: str | None = None, png: str | None = None) -> tuple[str, dict]:
    models = list(dict.fromkeys(r["model"] for r in rows))
    out = ["# diffsolve bench results", ""]
    if command:
        out += ["Regenerate with:", "", "```", command, "```", ""]
    if png:
        out += [f"![error against NFE]({os.path.basename(png)})", ""]
    summary = {}
    for m in models:
        lines, info = _model_section(m, [r for r in rows if r["model"] == m])
        out += lines
        summary[m] = info
    return "\n".join(out) + "\n", summary


def plot_errors(summary: dict, png: str) -> None:
    """Per model: left, each of our solvers at its best schedule; right, each peer configuration;
    both with the envelope of our best and the reference's own error."""
    import matplotlib  # here, not at the top: the Agg backend must be chosen before pyplot loads

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    models = list(summary)
    fig, axes = plt.subplots(len(models), 2, figsize=(13, 4.2 * len(models)), squeeze=False)
    for i, m in enumerate(models):
        info = summary[m]
        fixed = info["fixed"]
        by_solver = defaultdict(dict)  # ours: solver(+options) -> nfe -> best over schedules
        peers = {}
        for meth, d in fixed.items():
            row = d[next(iter(d))]["row"]
            pts = {n: e["value"] for n, e in d.items() if _is_num(e["value"])}
            if row["lib"] == "diffsolve":
                name = row["solver"] + (f" {{{row['options']}}}" if row["options"] else "")
                for n, v in pts.items():
                    if n not in by_solver[name] or v < by_solver[name][n]:
                        by_solver[name][n] = v
            else:
                peers[_label(row)] = pts
        env = sorted(info["best_ours"].items())
        for j, (title, series) in enumerate((("diffsolve (each solver at its best schedule)", by_solver),
                                            ("peers on the same network and noise", peers))):
            ax = axes[i][j]
            cmap = plt.get_cmap("tab20")
            for k, (name, pts) in enumerate(sorted(series.items())):
                xs = sorted(pts)
                if not xs:
                    continue
                ax.plot(xs, [pts[x] for x in xs], marker=".", lw=1, color=cmap(k % 20),
                        ls="-" if k < 20 else "--", label=name)
            if env:
                ax.plot([n for n, _ in env], [v[0] for _, v in env], color="black", lw=2.5, alpha=0.6,
                        label="best diffsolve (envelope)")
            if info["ref"]:
                ax.axhline(info["ref"], color="gray", ls=":", label="reference error (RK4 vs dopri5)")
            ax.set_xscale("log")
            ax.set_yscale("log")
            all_n = sorted({n for pts in series.values() for n in pts} | {n for n, _ in env})
            if all_n:
                ax.set_xticks(all_n)
                ax.xaxis.set_major_formatter(ScalarFormatter())
                ax.xaxis.set_minor_formatter(NullFormatter())
            lo = min([v[0] for _, v in env] + ([info["ref"]] if info["ref"] else []), default=1e-6)
            ax.set_ylim(lo / 3, 3.0)  # diverged configurations (error > 3) leave the chart
            ax.set_xlabel("NFE (counted at the network)")
            ax.set_ylabel("RMS error vs reference")
            ax.set_title(f"{m}: {title}", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=5.5, ncol=2, loc="lower left")
    fig.tight_layout()
    atomic_write(png, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def write_report(csvs: Sequence[str], prefix: str, command: str | None = None) -> tuple[str, str]:
    """Write PREFIX.md and PREFIX.png from sweep CSVs; returns their paths."""
    rows = load_rows(csvs)
    if not rows:
        raise ValueError(f"no rows in {', '.join(csvs)}")
    md_path, png_path = prefix + ".md", prefix + ".png"
    text, summary = render_markdown(rows, command, png_path)
    plot_errors(summary, png_path)
    atomic_write_text(md_path, text)
    return md_path, png_path
