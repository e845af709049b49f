"""diffsolve.bench: sweeps end to end, resumability, peers' NFE counting and starting point, Ray."""

from __future__ import annotations

import os
import sys
import warnings

import pytest
import torch

import diffsolve
from diffsolve.bench.peers import PEERS, load_k_diffusion_sampling, run_peer
from diffsolve.bench.report import write_report
from diffsolve.bench import (FLOOR, REFERENCE, Interrupted, SweepSpec, default_methods, make_cells, read_rows,
                             run_sweep)
from diffsolve.models.gmm import builtin

warnings.filterwarnings("ignore", category=FutureWarning)

S_MIN_KEY = "diffsolve:deis[karras]{final=s_min,lower_order_final=last}"  # grid options + solver options
METHODS = ("diffsolve:dpm++2m[log-snr]", "diffsolve:heun[karras]", S_MIN_KEY, "diffusers:DPMSolverMultistep(order=2)",
           "k-diffusion:dpmpp_2m(karras)", "torchdiffeq:dopri5(lambda)")
SPEC = SweepSpec(models=("gmm-2d",), methods=METHODS, nfes=(4, 5, 6), rtols=(0.01,), seeds=(0,), batch=8,
                 ref_steps=40, ref_rtol=1e-7, n_proj=32)


def _have(mod: str) -> bool:
    try:
        __import__(mod)
        return True
    except ImportError:
        return False


def _lib_ok(lib: str) -> bool:
    from diffsolve.bench.peers import available

    return available(lib) is None


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    csv_path = str(d / "full.csv")
    rows = run_sweep(SPEC, csv_path)
    with open(csv_path) as f:
        return csv_path, rows, f.read()


def test_cells_follow_nfe_rules():
    cells = make_cells(SPEC)
    by = {}
    for c in cells:
        by.setdefault(c.method, []).append(c.budget)
    assert by[REFERENCE] == [0] and by[FLOOR] == [0]
    assert by["diffsolve:heun[karras]"] == [5]  # 2N - 1 evaluations: odd budgets only
    assert by["diffsolve:dpm++2m[log-snr]"] == [4, 5, 6]
    assert by[S_MIN_KEY] == [4, 5, 6]
    assert by["torchdiffeq:dopri5(lambda)"] == [0.01]  # adaptive: one cell per tolerance
    # the registry is picked up: every registered solver appears in the default methods
    keys = default_methods(peers=False)
    assert {k.split(":")[1].split("[")[0] for k in keys} == set(diffsolve.solvers.SOLVERS) | {"auto", "tuned"}


def test_tiny_sweep_end_to_end(full_run, tmp_path):
    csv_path, rows, _ = full_run
    assert len(rows) == len(make_cells(SPEC))
    for r in rows:  # a peer library that is not installed is reported as skipped, with the reason
        want = "ok" if r["lib"] in ("diffsolve", "reference", "exact") or _lib_ok(r["lib"]) else "skipped"
        assert r["status"] == want, (r["method"], r["message"])
    by = {(r["method"], r["budget"]): r for r in rows}
    ref = by[(REFERENCE, "0")]
    assert float(ref["rms"]) < 1e-4  # RK4 and dopri5 agree: the reference is accurate
    for r in rows:
        if r["kind"] == "fixed" and r["status"] == "ok":
            assert int(r["nfe"]) == int(r["budget"])  # NFE counted at the network equals the budget
    assert by[(S_MIN_KEY, "5")]["options"] == "final=s_min,lower_order_final=last"
    # more evaluations, smaller error (same noise, same reference)
    assert float(by[("diffsolve:dpm++2m[log-snr]", "6")]["rms"]) < float(by[("diffsolve:dpm++2m[log-snr]", "4")]["rms"])
    # the floor row carries the distribution metrics of two exact sets
    fl = by[(FLOOR, "0")]
    assert float(fl["sliced_w2"]) > 0 and 0 < float(fl["mode_tv"]) < 1
    md, png = write_report([csv_path], str(tmp_path / "report"), command="diffsolve bench ...")
    text = open(md).read()
    assert "**" in text and "reference error" in text.lower() and os.path.getsize(png) > 1000


def test_resume_after_interrupt(full_run, tmp_path):
    _, _, full_text = full_run
    csv_path = str(tmp_path / "resumed.csv")
    k = 5

    def stop_after_k(row, done, total):
        if done == k:
            raise Interrupted

    with pytest.raises(Interrupted):
        run_sweep(SPEC, csv_path, on_row=stop_after_k)
    assert len(read_rows(csv_path)) == k  # every finished cell was written before the "kill"
    with open(csv_path, "a") as f:  # a kill in the middle of a write leaves a torn line
        f.write("gmm-2d,ddpm-linear,eps,8,0,diffsolve:dpm")
    computed = []
    run_sweep(SPEC, csv_path, on_row=lambda row, done, total: computed.append(row["method"]))
    assert len(computed) == len(make_cells(SPEC)) - k  # only the missing cells were computed
    with open(csv_path) as f:
        assert f.read() == full_text  # identical to an uninterrupted run


def _counting(net):
    calls = []

    def f(x, t, **kw):
        calls.append(1)
        return net(x, t, **kw)

    return f, calls


@pytest.mark.parametrize("key,budget", [
    ("diffusers:DDIM", 5), ("diffusers:DPMSolverMultistep(order=3,karras)", 6), ("diffusers:DPMSolverSinglestep(order=3)", 6),
    ("diffusers:UniPC(bh2,order=2)", 5), ("diffusers:UniPC(bh1,order=2,sigma_min+denoise)", 5), ("diffusers:DEIS(order=3)", 4),
    ("diffusers:Heun", 5), ("diffusers:LMS(karras)", 4), ("k-diffusion:heun(karras)", 5), ("k-diffusion:dpm_2(karras)", 7),
    ("k-diffusion:lms(karras)", 4), ("k-diffusion:dpm_fast", 6), ("torchdiffeq:rk4(lambda)", 9),
])
def test_peers_count_nfe_at_the_network(key, budget):
    if not _lib_ok(PEERS[key].lib):
        pytest.skip(f"{PEERS[key].lib} is not installed")
    g = builtin("gmm-2d")
    path = diffsolve.get_path("ddpm-linear")
    net, calls = _counting(g.network(path, "eps"))
    y0 = path.s_max * torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x, nfe = run_peer(key, net, path, y0, budget)
    assert nfe == len(calls) == budget
    assert x.shape == y0.shape and bool(torch.isfinite(x).all())


@pytest.mark.skipif(not _have("diffusers"), reason="diffusers is not installed")
def test_peer_and_ours_agree_on_the_same_method():
    """Same starting noise, same network, same grid, same algorithm: diffusers' DPM-Solver++(2M)
    and ours land on the same samples (x_T = alpha(t_0) y_0 makes the starting points identical)."""
    g = builtin("gmm-64")
    path = diffsolve.get_path("ddpm-linear")
    net = g.network(path, "eps")
    noise = torch.randn(6, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ours = diffsolve.sample(diffsolve.from_network(net, path, "eps"), noise, solver="dpm++2m", nfe=8,
                            schedule="time-linspace").samples
    theirs, nfe = run_peer("diffusers:DPMSolverMultistep(order=2)", net, path, noise * path.s_max, 8)
    assert nfe == 8
    # diffusers keeps its tables in float32: agreement to float32 rounding, far below the error (~1e-2)
    assert float((ours - theirs).abs().max()) < 1e-5


def test_k_diffusion_stubs_do_not_leak():
    if not _lib_ok("k-diffusion"):
        pytest.skip("k-diffusion is not installed")
    load_k_diffusion_sampling()
    for name in ("torchsde", "torchvision"):
        if name in sys.modules:
            assert not type(sys.modules[name]).__name__ == "_Stub"


@pytest.mark.slow
@pytest.mark.skipif(not _have("ray"), reason="ray is not installed (pip install 'diffsolve[ray]')")
def test_ray_matches_serial(tmp_path):
    """Cells computed by Ray workers (other processes, any completion order) give the same file."""
    spec = SweepSpec(models=("gmm-2d", "gmm-64"), methods=("diffsolve:dpm++2m[log-snr]", "diffsolve:heun[karras]"),
                     nfes=(4, 5), seeds=(0,), batch=8, ref_steps=20, ref_rtol=1e-6, n_proj=16)
    serial, parallel = str(tmp_path / "serial.csv"), str(tmp_path / "ray.csv")
    run_sweep(spec, serial)
    run_sweep(spec, parallel, ray="local", ray_cpus=2, chunk=2)
    with open(serial) as a, open(parallel) as b:
        text = a.read()
        assert text.count("\n") == len(make_cells(spec)) + 1 and b.read() == text


def test_trained_model_peer_runs_the_models_own_prediction_type():
    """A shipped EDM-preconditioned checkpoint through k-diffusion's DPM-Solver++(2M) on Karras
    levels: the peer gets the same canonical denoiser as ours, so both land on the same samples;
    diffusers' schedulers (eps networks on DDPM tables) are skipped with the reason."""
    if not _lib_ok("k-diffusion"):
        pytest.skip("k-diffusion is not installed")
    from diffsolve.bench.peers import applicable
    from diffsolve.bench.networks import BoundNet as _BoundNet, cond_for as _cond_for, model_network as _model

    m, net, path, pred, exact = _model("mnist", "ddpm-linear", "eps")
    assert (pred, exact) == ("edm", False)
    assert "DDPM tables" in applicable("diffusers:DDIM", path, pred)
    bnet = _BoundNet(net, _cond_for(m, 3))
    noise = torch.randn(3, 1, 28, 28, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = diffsolve.sample(diffsolve.from_network(bnet, path, pred), noise, solver="dpm++2m", nfe=6,
                                schedule="karras").samples
        theirs, nfe = run_peer("k-diffusion:dpmpp_2m(karras)", bnet, path, noise * path.s_max, 6, prediction=pred)
    assert nfe == 6 and float((ours - theirs).abs().max()) < 1e-5


def test_trained_model_sweep_reports_a_trained_network(tmp_path):
    spec = SweepSpec(models=("digits",), methods=("diffsolve:dpm++2m[karras]", "diffusers:DPMSolverMultistep(order=2)"),
                     nfes=(5,), seeds=(0,), batch=4, ref_steps=10, ref_rtol=1e-5)
    rows = run_sweep(spec, str(tmp_path / "d.csv"))
    st = {r["method"]: r["status"] for r in rows}
    assert st[FLOOR] == "skipped" and st["diffsolve:dpm++2m[karras]"] == "ok"
    assert st["diffusers:DPMSolverMultistep(order=2)"] == ("ok" if _lib_ok("diffusers") else "skipped")
    md, _ = write_report([str(tmp_path / "d.csv")], str(tmp_path / "d"), command="diffsolve bench ...")
    assert "trained `eps`-prediction network" in open(md).read()


def test_resume_removes_orphans_of_a_killed_atomic_write(tmp_path):
    """A kill during the store's atomic rewrite leaves ``.tmp-*`` beside the CSV; the next run
    removes it (but not a fresh one, which may belong to a sweep writing there right now)."""
    import time

    from diffsolve.bench.store import ORPHAN_AGE_S, open_store

    orphan, fresh, other = tmp_path / ".tmp-abcd1234.csv", tmp_path / ".tmp-wxyz5678.csv", tmp_path / "notes.csv"
    for p in (orphan, fresh, other):
        p.write_text("half a file")
    old = time.time() - 2 * ORPHAN_AGE_S
    os.utime(orphan, (old, old))
    os.utime(other, (old, old))
    assert open_store(str(tmp_path / "s.csv")) == set()
    assert not orphan.exists() and fresh.exists() and other.exists()


def test_a_stability_warning_becomes_the_rows_message(monkeypatch):
    """A sweep runs unstable configurations on purpose: their warning is recorded in the row
    (the report lists it), not printed once per cell."""
    from diffsolve.bench import measure
    from diffsolve.solvers import StabilityWarning

    spec = SweepSpec(models=("gmm-2d",), methods=("diffsolve:dpm++2m[log-snr]",), nfes=(4,), seeds=(0,), batch=4,
                     ref_steps=10, ref_rtol=1e-5)
    ctx = measure.compute_context(spec, "gmm-2d", 0)
    real = measure._run_ours

    def unstable(*args):
        warnings.warn("dpm++2m: this grid amplifies its error", StabilityWarning)
        return real(*args)

    monkeypatch.setattr(measure, "_run_ours", unstable)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing escapes the cell
        row = measure.run_cell(spec, make_cells(spec)[-1], ctx)
    assert row["status"] == "ok" and row["nfe"] == 4
    assert row["message"] == "warning: dpm++2m: this grid amplifies its error"


def _unused_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


def test_an_unreachable_ray_address_is_refused_at_once(tmp_path, capsys):
    import time

    from diffsolve.bench.ray_address import check_ray_address
    from diffsolve.cli import main

    address = f"127.0.0.1:{_unused_port()}"
    t0 = time.time()
    with pytest.raises(ValueError, match=f"ray address '{address}': no Ray cluster reachable there"):
        run_sweep(SPEC, str(tmp_path / "s.csv"), ray=address)
    assert not os.path.exists(tmp_path / "s.csv")  # refused before any work
    for bad, why in (("bogus", "is not HOST:PORT"), ("host:99999", "is not HOST:PORT"),
                     ("no-such-host.invalid:6379", "does not resolve")):
        with pytest.raises(ValueError, match=why):
            check_ray_address(bad)
    assert check_ray_address("local") == "local"
    rc = main(["bench", "--models", "gmm-2d", "--ray", address, "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith(f"diffsolve bench: error: argument --ray: ray address '{address}'"), err
    assert time.time() - t0 < 30
