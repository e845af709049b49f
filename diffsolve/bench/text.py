"""The discrete (text) benchmark: every sampler x network-call budget on the exact chain (bias)
and on the trained Shakespeare model (quality under the AR reference, diversity, speed).

* ``exact``: :meth:`MarkovChain.shakespeare` (72 characters, order 1), ``length`` 64, 256
  samples per cell. Bias measures (:meth:`MarkovChain.bias`): per-character NLL of the samples
  under the chain minus the chain's exact entropy (0 for exact samples, with its standard
  error), bigram and unigram KL to the chain's exact law.
* ``model``: the shipped ``shakespeare`` masked model, ``length`` 256, 32 samples per cell:
  the AR reference's NLL per character (``shakespeare-ar``), unigram entropy, distinct n-grams
  and n-gram KL to real held-out text, beside the same numbers for real held-out windows
  (the ``reference`` row), network calls, tokens per call and wall time.

Fixed-step samplers run at ``nfe`` in length/16 ... length; adaptive decoders (threshold,
factor, adablock) run uncapped at several values of their knob and report the calls they made.
Rows are stored in a resumable CSV (one row per finished cell); the report and plots are made
from the CSV.

    diffsolve text-bench --part exact --out bench/results/text
    diffsolve text-bench --part model --out bench/results/text
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, Callable, Iterable

import torch

from ..discrete.sample import sample_tokens
from .store import Table, fmt

__all__ = ["COLUMNS", "KEY", "cells", "run_text_bench", "PARTS", "reference_rows"]

COLUMNS = ["part", "model", "length", "num", "label", "sampler", "options", "nfe", "calls", "per_sample_calls",
           "tokens_per_call", "seconds", "nll_gap", "nll_gap_se", "bigram_kl", "unigram_kl", "gen_nll", "gen_nll_se",
           "unigram_entropy", "distinct_2", "distinct_3", "distinct_4", "kl_1", "kl_2", "kl_3", "status", "message"]
KEY = ("part", "model", "length", "label", "nfe")
PARTS = ("exact", "model")
SETTINGS = {"exact": {"model": "chain", "length": 64, "num": 256},
            "model": {"model": "shakespeare", "length": 256, "num": 32}}


def _fixed(label: str, sampler: str, fractions: Iterable[float], **options: Any) -> list[dict]:
    return [{"label": label, "sampler": sampler, "options": options, "frac": f} for f in fractions]


def cells(part: str) -> list[dict]:
    """The cells of a part: label, sampler, options, and the budget as a fraction of the length
    (``frac``; None for adaptive decoders, which stop when done)."""
    all_f, fast_f = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1), (1 / 16, 1 / 8, 1 / 4, 1 / 2)
    out = [{"label": "first-hitting", "sampler": "first-hitting", "options": {}, "frac": 1.0}]
    out += _fixed("mdlm", "mdlm", all_f)
    out += _fixed("mdlm-t0.9", "mdlm", (1 / 4, 1 / 2), temperature=0.9)
    out += _fixed("mdlm-t0.8", "mdlm", (1 / 4, 1 / 2), temperature=0.8)
    # with the linear schedule Euler's first-order unmasking probability (t - s) / t is the exact
    # one, so Euler tau-leaping is compared with mdlm on the cosine schedule, where they differ
    out += _fixed("mdlm-cosine", "mdlm", all_f if part == "exact" else (1 / 4, 1 / 2), schedule="cosine")
    out += _fixed("euler-cosine", "euler", all_f if part == "exact" else (1 / 4, 1 / 2), schedule="cosine")
    out += _fixed("confidence", "confidence", fast_f)
    out += _fixed("margin", "margin", fast_f)
    out += _fixed("entropy", "entropy", fast_f)
    out += _fixed("confidence-blocks32", "confidence", fast_f, block_size=32)
    out += _fixed("remask", "remask", fast_f)
    out += _fixed("joint-k4", "joint", (1 / 16, 1 / 8) if part == "model" else fast_f, candidates=4)
    for tau in (0.5, 0.7, 0.9):
        out.append({"label": f"threshold-{tau}", "sampler": "threshold", "options": {"tau": tau}, "frac": None})
    for f in (1.0, 2.0, 4.0):
        out.append({"label": f"factor-{f:g}", "sampler": "factor", "options": {"factor": f}, "frac": None})
    out.append({"label": "adablock", "sampler": "adablock", "options": {}, "frac": None})
    if part == "exact":  # a peer library's sampler on the same exact chain (diffsolve.bench.discrete_peers)
        out += _fixed("peer:flow_matching", "peer:flow_matching", all_f)
    return out


def _nfe(cell: dict, length: int) -> int | None:
    return None if cell["frac"] is None else max(1, round(cell["frac"] * length))


def reference_rows(part: str, length: int, num: int, ar: Any = None) -> dict[str, Any]:
    """The row of real data: exact chain samples (``exact``) or held-out text windows (``model``)."""
    from ..discrete.chain import MarkovChain
    if part == "exact":
        ch = MarkovChain.shakespeare()
        x = ch.sample(num, length, seeds=range(10**9, 10**9 + num))
        b = ch.bias(x)
        return {"label": "exact samples", "sampler": "-", "nll_gap": b["nll_minus_entropy"],
                "nll_gap_se": b["nll_minus_entropy_se"], "bigram_kl": b["bigram_kl"], "unigram_kl": b["unigram_kl"]}
    from ..discrete.corpus import encode, shakespeare, vocabulary
    from ..discrete.metrics import text_report
    ref = _held_out_windows(length, 3 * num)
    r = text_report(ref[num:2 * num], torch.cat([ref[:num], ref[2 * num:]]), ar)["samples"]
    return {"label": "real held-out text", "sampler": "-", **_model_metrics(r)}


def _held_out_windows(length: int, count: int) -> torch.Tensor:
    from ..discrete.corpus import encode, shakespeare, vocabulary
    data = encode(shakespeare("held-out"), vocabulary())
    g = torch.Generator().manual_seed(2024)
    starts = torch.randint(len(data) - length, (count,), generator=g)
    return data[starts[:, None] + torch.arange(length)]


def _model_metrics(r: dict) -> dict[str, Any]:
    return {"gen_nll": r.get("nll"), "gen_nll_se": r.get("nll_se"), "unigram_entropy": r["unigram_entropy"],
            **{f"distinct_{n}": r[f"distinct_{n}"] for n in (2, 3, 4)}, **{f"kl_{n}": r[f"kl_{n}"] for n in (1, 2, 3)}}


def _run_cell(part: str, cell: dict, model: Any, ar: Any, length: int, num: int, ref: torch.Tensor | None) -> dict:
    from ..discrete.metrics import text_report
    opts = dict(cell["options"])
    if cell["sampler"] == "joint":
        opts["energy"] = model.log_prob if part == "exact" else ar.log_prob
    nfe = _nfe(cell, length)
    t0 = time.time()
    if cell["sampler"].startswith("peer:"):  # calls counted at the peer's model wrapper, per-sample seeds
        from .discrete_peers import run_discrete_peer
        res = run_discrete_peer(cell["sampler"][5:], model, num, length, nfe, seeds=range(num), **opts)
    else:
        res = sample_tokens(model, num, length, cell["sampler"], nfe, seeds=range(num), **opts)
    secs = time.time() - t0
    row = {"calls": res.nfe, "per_sample_calls": res.info["per_sample_nfe"],
           "tokens_per_call": res.info["tokens_per_call"], "seconds": round(secs, 2)}
    if part == "exact":
        b = model.bias(res.tokens)
        row.update(nll_gap=b["nll_minus_entropy"], nll_gap_se=b["nll_minus_entropy_se"], bigram_kl=b["bigram_kl"],
                   unigram_kl=b["unigram_kl"])
    else:
        r = text_report(res.tokens, ref, ar)["samples"]
        row.update(_model_metrics(r))
    return row


def run_text_bench(part: str, out: str, *, labels: Iterable[str] | None = None, progress: bool = True,
                   log: Callable[[str], None] = print) -> Table:
    """Run (or resume) one part into ``OUT.csv``; returns the table."""
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; accepted: {', '.join(PARTS)}")
    st = SETTINGS[part]
    length, num = st["length"], st["num"]
    table = Table(out + ".csv", COLUMNS, KEY)
    done = table.done()
    todo = [c for c in cells(part) if labels is None or c["label"] in set(labels)]
    ar = ref = None
    if part == "exact":
        from ..discrete.chain import MarkovChain
        model = MarkovChain.shakespeare()
    else:
        from ..discrete.models import load_text_model
        model, ar = load_text_model("shakespeare"), load_text_model("shakespeare-ar")
        ref = _held_out_windows(length, 3 * num)[num:]  # the KL target (the reference row uses others)
    base = {"part": part, "model": st["model"], "length": length, "num": num}
    key_ref = table.row_key({**base, "label": "reference", "nfe": ""})
    if key_ref not in done:
        table.append({**base, "label": "reference", "nfe": "", "status": "ok",
                      **{k: v for k, v in reference_rows(part, length, num, ar).items() if k != "label"},
                      "message": "exact chain samples" if part == "exact" else "real held-out text windows"})
    for cell in todo:
        nfe = _nfe(cell, length)
        row = {**base, "label": cell["label"], "sampler": cell["sampler"],
               "options": json.dumps(cell["options"], sort_keys=True), "nfe": nfe}
        if table.row_key(row) in done:
            continue
        try:
            row.update(_run_cell(part, cell, model, ar, length, num, ref), status="ok")
        except (ValueError, RuntimeError) as e:
            row.update(status="error", message=" ".join(str(e).split()))
        table.append(row)
        if progress:
            log(f"{part} {cell['label']} nfe={fmt(nfe) or 'adaptive'}: calls {row.get('calls')}, "
                f"{'gap ' + format(row['nll_gap'], '.4f') if part == 'exact' and row.get('nll_gap') is not None else ''}"
                f"{'gen NLL ' + format(row['gen_nll'], '.3f') + ' H1 ' + format(row['unigram_entropy'], '.3f') if row.get('gen_nll') is not None else ''}"
                f" ({row.get('seconds')} s)")
    table.canonicalize([table.row_key({**base, "label": c["label"], "nfe": _nfe(c, length)}) for c in cells(part)])
    return table
