"""The inverse-problem benchmarks and ``diffsolve inverse``: a tiny exact run end to end (CSV,
report, plot; resumed after an interruption to the same file), the metrics' properties, the
problems' exact posteriors, the MNIST pieces and the command line's one-line errors."""

from __future__ import annotations

import os

import pytest
import torch

from diffsolve.bench.inverse_exact import COLUMNS, FLOOR, ExactSpec, exact_cells, run_exact, tds_particles
from diffsolve.bench.inverse_problems import (DEFAULT_EXACT_PROBLEMS, check_exact_problem, exact_problem,
                                              mnist_operator)
from diffsolve.bench.inverse_report import exact_report, exact_summary
from diffsolve.bench.inverse_store import Table
from diffsolve.cli import main
from diffsolve.metrics.image import psnr, ssim

F64 = torch.float64


# -- the exact benchmark ---------------------------------------------------------------------
TINY = dict(problems=("gmm-2d",), methods=("ddrm", "pigdm"), nfes=(20,), num=300, oracles=("oracle:dpm++2m",))


def test_tiny_exact_run_writes_csv_and_report_and_resumes(tmp_path):
    """One problem, two methods, one NFE: the floor row is exactly 1x itself, the oracle (exact
    denoiser, 20 steps) is closer to the posterior than the approximate methods, an interrupted
    run resumes to the same file as an uninterrupted one, a finished run computes nothing."""
    full = str(tmp_path / "full.csv")
    rows = run_exact(full, progress=False, **TINY)
    assert [(r["method"], r["budget"]) for r in rows] == [(FLOOR, "0"), ("oracle:dpm++2m", "20"), ("ddrm", "20"),
                                                          ("pigdm", "20")]
    assert all(r["status"] == "ok" for r in rows)
    by = {r["method"]: r for r in rows}
    assert float(by[FLOOR]["w2_ratio"]) == 1.0
    assert int(by["ddrm"]["nfe"]) == 20 and int(by["pigdm"]["vjp"]) == 10
    assert float(by["oracle:dpm++2m"]["w2_ratio"]) < 2.5
    assert min(float(by[m]["w2_ratio"]) for m in ("ddrm", "pigdm")) > float(by["oracle:dpm++2m"]["w2_ratio"])
    assert 0 <= float(by["ddrm"]["weight_tv"]) <= 1

    class Stop(Exception):
        pass

    def stop_after_two(row, done, total):
        if done == 2:
            raise Stop

    part = str(tmp_path / "part.csv")
    with pytest.raises(Stop):
        run_exact(part, progress=False, on_row=stop_after_two, **TINY)
    assert len(Table(part, list(rows[0]), ("problem",)).rows()) == 2
    with open(part, "a") as f:
        f.write("gmm-2d,2,1,0.2,300,dd")  # a kill mid-write
    seen = []
    run_exact(part, progress=False, on_row=lambda r, d, t: seen.append(r["method"]), **TINY)
    assert seen == ["ddrm", "pigdm"]
    def strip(path):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in Table(path, list(rows[0]), ()).rows()]
    assert strip(part) == strip(full)                                      # the same rows, in the same order
    again = []
    run_exact(full, progress=False, on_row=lambda r, d, t: again.append(r), **TINY)
    assert again == []

    md, png = exact_report(rows, str(tmp_path / "rep"), "diffsolve inverse-bench exact ...")
    text = open(md).read()
    assert "diffsolve inverse-bench exact ..." in text and "| ddrm |" in text and os.path.getsize(png) > 1000


def test_refusals_are_rows_with_reasons(tmp_path):
    """A budget a method cannot spend (DPS: an odd NFE) and a cell over the cost cap are
    recorded as skipped with the reason, not raised."""
    rows = run_exact(str(tmp_path / "s.csv"), problems=("gmm-2d",), methods=("dps",), nfes=(7, 20), num=50,
                     oracles=(), max_cost=20 * 50 * 2 * 8 - 1, progress=False)
    by = {r["budget"]: r for r in rows if r["method"] == "dps"}
    assert by["7"]["status"] == "skipped" and "nfe=7" in by["7"]["message"]
    assert by["20"]["status"] == "over-cap" and "cap" in by["20"]["message"]
    rows = run_exact(str(tmp_path / "s.csv"), problems=("gmm-2d",), methods=("dps",), nfes=(7, 20), num=50,
                     oracles=(), progress=False)                               # a larger cap computes it
    assert [r["status"] for r in rows if r["method"] == "dps"] == ["skipped", "ok"] and len(rows) == 3


def test_exact_summary_lists_methods_within_the_floor():
    rows = [{"problem": "p", "method": "a", "budget": "50", "status": "ok", "w2_ratio": "1.2"},
            {"problem": "p", "method": "a", "budget": "20", "status": "ok", "w2_ratio": "1.4"},
            {"problem": "p", "method": "b", "budget": "10", "status": "ok", "w2_ratio": "3"},
            {"problem": "p", "method": "oracle:x", "budget": "10", "status": "ok", "w2_ratio": "1.0"},
            {"problem": "p", "method": "c", "budget": "2000", "status": "ok", "w2_ratio": "1.0"}]
    assert exact_summary(rows) == {"p": [("a", 20, 1.4)]}


def test_tds_particles_spend_the_budget_exactly():
    for nfe in (10, 20, 50, 100, 1000, 64):
        k = tds_particles(nfe)
        assert k >= 1 and nfe % (2 * k) == 0 and nfe // (2 * k) >= 2
    assert tds_particles(1000) == 20 and tds_particles(7) == 0


def test_spec_refuses_unknown_names():
    with pytest.raises(ValueError, match="accepted: .*ddrm"):
        ExactSpec(methods=("nope",))
    with pytest.raises(ValueError, match="grid-D-yM"):
        check_exact_problem("grid-8-y0")
    assert check_exact_problem("grid-16-y3") == "grid-16-y3"
    cells = exact_cells(ExactSpec(problems=("gmm-2d",), methods=("ddrm",), nfes=(10, 20), oracles=()))
    assert cells == [("gmm-2d", FLOOR, 0), ("gmm-2d", "ddrm", 10), ("gmm-2d", "ddrm", 20)]


@pytest.mark.parametrize("name", DEFAULT_EXACT_PROBLEMS)
def test_problems_are_seeded_and_their_posterior_fits_the_measurement(name):
    """Each problem is the same on every build, and its posterior mean explains y better than
    the prior mean (the measurement is informative)."""
    p = exact_problem(name)
    assert torch.equal(p.y, exact_problem(name).y)
    post = p.posterior
    assert abs(float(post.weights.sum()) - 1) < 1e-9
    fit = lambda m: float((p.operator.forward(m.reshape(1, *p.prior.shape)) - p.y).norm())  # noqa: E731
    assert fit(post.mean()) < fit(p.prior.mean())


def test_grid_problem_follows_mcgdiff():
    """grid-D-yM: M measurements whose singular values lie in (0, 1), sigma_y below the largest."""
    p = exact_problem("grid-80-y2")
    sv = torch.linalg.svdvals(p.operator.matrix())
    assert p.prior.K == 25 and p.y.shape == (1, 2) and bool((sv > 0).all() and (sv < 1).all())
    assert 0 < p.sigma_y < float(sv.max())


# -- image metrics ---------------------------------------------------------------------------
def test_psnr_and_ssim_properties():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 28, 28, generator=g, dtype=F64)
    assert torch.isinf(psnr(x, x)).all() and torch.allclose(ssim(x, x), torch.ones(3, dtype=F64))
    noise = torch.randn(x.shape, generator=g, dtype=F64)
    small, big = (x + 0.02 * noise).clamp(0, 1), (x + 0.2 * noise).clamp(0, 1)
    mse = (small - x).pow(2).flatten(1).mean(1)
    assert torch.allclose(psnr(small, x), -10 * torch.log10(mse))
    assert bool((ssim(big, x) < ssim(small, x)).all() and (ssim(small, x) < 1).all())
    assert torch.allclose(ssim(big, x), ssim(x, big))                       # symmetric
    assert torch.allclose(psnr(2 * small - 1, 2 * x - 1, (-1.0, 1.0)), psnr(small, x))  # range-aware
    with pytest.raises(ValueError, match="shape"):
        psnr(x, x[:2])
    with pytest.raises(ValueError, match="11x11"):
        ssim(x[..., :8, :8], x[..., :8, :8])


def test_mnist_tasks_have_the_documented_operators():
    box = mnist_operator("inpaint-box")
    assert box.out_shape == (28 * 28 - 144,)
    rnd = mnist_operator("inpaint-random")
    assert abs(rnd.out_shape[0] / 784 - 0.3) < 0.03
    assert mnist_operator("sr4").out_shape == (1, 7, 7) and mnist_operator("blur").out_shape == (1, 28, 28)
    with pytest.raises(ValueError, match="accepted: inpaint-box"):
        mnist_operator("inpaint")


def test_tiny_mnist_run_writes_rows_figure_and_report(tmp_path):
    """One task, the default method at 4 NFE, the conditional group too: baselines, metrics in
    range, the spread of 2 samples per measurement, the figure; a rerun computes nothing."""
    from diffsolve.bench.inverse_mnist import run_mnist
    from diffsolve.bench.inverse_report import mnist_report
    from diffsolve.inverse import DEFAULT_METHOD

    kw = dict(tasks=("inpaint-random",), methods=(DEFAULT_METHOD,), nfes=(4,), peers=(), num=4, spread_truths=2,
              spread_samples=2, progress=False)
    rows = run_mnist(str(tmp_path / "m.csv"), figures=str(tmp_path / "m"), **kw)
    assert [(r["group"], r["method"]) for r in rows] == [("uncond", "baseline:zero-fill"), ("uncond", "baseline:pinv"),
                                                         ("uncond", DEFAULT_METHOD), ("cond", DEFAULT_METHOD)]
    assert all(r["status"] == "ok" for r in rows)
    ours = rows[2]
    assert int(ours["nfe"]) == 4 and 0 < float(ours["ssim"]) <= 1 and 0 <= float(ours["acc_independent"]) <= 1
    assert float(ours["spread"]) > 0 and rows[3]["spread"] == ""
    assert os.path.getsize(tmp_path / "m-inpaint-random.png") > 1000
    again = []
    run_mnist(str(tmp_path / "m.csv"), figures=str(tmp_path / "m"), on_row=lambda r, d, t: again.append(r), **kw)
    assert again == []
    md = open(mnist_report(rows, str(tmp_path / "m"), "cmd", figures=["m-inpaint-random.png"])).read()
    assert "| uncond | baseline:zero-fill |" in md and "m-inpaint-random.png" in md


# -- the command line --------------------------------------------------------------------------
def test_cli_inverse_writes_the_figure(tmp_path, capsys):
    out = str(tmp_path / "fig.png")
    assert main(["inverse", "--task", "sr4", "--method", "ddrm", "--num", "2", "--nfe", "4", "--samples", "2",
                 "--out", out, "--quiet"]) == 0
    text = capsys.readouterr().out
    assert os.path.getsize(out) > 1000
    assert "4 NFE" in text and "PSNR" in text and "independent MLP" in text


@pytest.mark.parametrize("argv, flag", [
    (["--task", "zoom"], "--task"), (["--sigma-y", "1.5"], "--sigma-y"), (["--method", "magic"], "--method"),
    (["--nfe", "0"], "--nfe"), (["--label", "11", "--num", "1"], "--label"), (["--out", "x.bmp"], "--out"),
    (["--method", "dps", "--nfe", "5", "--num", "1"], "--nfe"), (["--num", "0"], "--num"),
])
def test_cli_inverse_bad_flags_are_one_line_errors(argv, flag, tmp_path, capsys):
    assert main(["inverse", *argv, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("diffsolve inverse: error: argument " + flag)


def test_cli_inverse_bench_bad_flags(capsys):
    assert main(["inverse-bench", "exact", "--problems", "grid-1-y1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--problems" in err and "grid-D-yM" in err
    assert main(["inverse-bench", "cubes"]) == 2
    assert "suite" in capsys.readouterr().err


def test_cli_inverse_bench_exact_lists_every_command_that_filled_the_csv(tmp_path, capsys):
    out = str(tmp_path / "e")
    base = ["inverse-bench", "exact", "--problems", "gmm-2d", "--methods", "ddrm", "--num", "50", "--oracles",
            "oracle:dpm++2m", "--out", out, "--quiet"]
    assert main([*base, "--nfes", "10"]) == 0
    assert main([*base, "--nfes", "10", "20"]) == 0
    assert main([*base, "--nfes", "10", "20"]) == 0                       # resumed: nothing new, listed once
    text = open(out + ".md").read()
    assert text.count("diffsolve inverse-bench exact") == 2 and "--nfes 10 20" in text
    rows = Table(out + ".csv", COLUMNS, ()).rows()
    assert [(r["method"], r["budget"]) for r in rows if r["method"] == "ddrm"] == [("ddrm", "10"), ("ddrm", "20")]
    assert os.path.exists(out + ".png")
