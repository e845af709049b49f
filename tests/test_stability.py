"""Solver.grid_warning: configurations whose samples blow up warn from the grid alone; the
configurations the README runs do not (rule and calibration: diffsolve/solvers/stability.py)."""

from __future__ import annotations

import warnings

import pytest
import torch

import diffsolve
from diffsolve.schedules import make_schedule
from diffsolve.solvers import SOLVERS, StabilityWarning, get_solver

F64 = torch.float64
G2 = diffsolve.exact_model("gmm-2d")


def _grid(kind, n_steps, path):
    return tuple(make_schedule(kind, n_steps, path=path).tolist())


def _steps(name, nfe):
    return get_solver(name).steps_for_nfe(nfe, True)


# (solver, schedule, nfe, path, samples' RMS / data RMS measured on gmm-2d, 32 samples)
BLOWN = [
    ("heun", "karras", 3, "ddpm-cosine", 3.5e4), ("heun", "karras", 9, "edm", 3.5),
    ("heun", "karras", 5, "ddpm-linear", 14), ("rk4", "karras", 9, "ddpm-linear", 2.8e3),
    ("rk4", "log-snr", 5, "ve", 10), ("dpm-solver-2", "time", 9, "edm", 3),
    ("dpm-solver-2", "karras", 3, "flow", 640), ("dpm-solver-3", "time", 10, "edm", 3),
    ("dpm-solver-3", "karras", 4, "ddpm-cosine", 1.3e3), ("dpm-solver-fast", "karras", 8, "ddpm-cosine", 3),
]


@pytest.mark.parametrize("name,kind,nfe,path,measured", BLOWN)
def test_blown_up_configurations_warn_naming_the_step(name, kind, nfe, path, measured):
    slv = get_solver(name).for_nfe(nfe, True)
    grid = _grid(kind, slv.steps_for_nfe(nfe, True), path)
    msg = slv.grid_warning(grid)
    assert msg is not None and msg.startswith(f"{name}: the step ") and "\n" not in msg
    assert "ratio" in msg and "measured" in msg  # the offending step and a measured alternative


def test_a_warned_configuration_really_blows_up_and_the_advised_one_does_not():
    noise = torch.randn(32, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    data_rms = float(G2.sample(4096, generator=torch.Generator().manual_seed(1)).pow(2).mean().sqrt())
    grid = _grid("karras", 2, "ddpm-cosine")
    assert get_solver("heun").grid_warning(grid) is not None
    with pytest.warns(StabilityWarning, match="heun: the step"):  # the driver warns (diffsolve/sample.py)
        res = diffsolve.sample(G2, noise, solver="heun", nfe=3, schedule="karras", path="ddpm-cosine")
    assert float(res.samples.pow(2).mean().sqrt()) > 100 * data_rms
    assert get_solver("dpm++2s").grid_warning(grid) is None  # the advised alternative, same grid
    res = diffsolve.sample(G2, noise, solver="dpm++2s", nfe=3, schedule="karras", path="ddpm-cosine")
    assert float(res.samples.pow(2).mean().sqrt()) < 1.5 * data_rms


@pytest.mark.parametrize("path", list(diffsolve.PATHS))
def test_readme_configurations_do_not_warn(path):
    for name, nfes in (("dpm++2m", (10, 20)), ("unipc", (8, 10, 20)), ("ddim", (10, 20)), ("deis", (10, 20)),
                       ("ipndm", (10, 20)), ("dpm++2s", (11, 21))):
        for nfe in nfes:
            grid = _grid("karras", _steps(name, nfe), path)
            assert get_solver(name).grid_warning(grid) is None, (name, nfe, path)


def test_adaptive_solvers_do_not_judge_grids():
    grid = _grid("karras", 2, "ddpm-cosine")
    for name, cls in SOLVERS.items():
        if getattr(cls, "adaptive", False):
            assert get_solver(name).grid_warning(grid) is None


@pytest.mark.parametrize("name, nfe, warns", [("euler-maruyama", 3, True), ("edm-churn", 3, True),
                                              ("euler-maruyama", 50, False), ("ddpm", 10, False),
                                              ("euler-a", 20, False), ("sde-dpm++2m", 20, False)])
def test_stochastic_solvers_are_judged_on_the_spread_of_their_samples(name, nfe, warns):
    """On the exact mixture the samples of the flagged runs are 10-400x the data's RMS; those
    not flagged stay within 1.3x (measured: scripts/nan_sweep.py)."""
    import torch
    import diffsolve

    slv = get_solver(name).for_nfe(nfe)
    grid = _grid("karras", slv.steps_for_nfe(nfe), "ddpm-linear")
    assert (slv.grid_warning(grid) is not None) == warns
    g = diffsolve.exact_model("gmm-2d")
    data_rms = float(g.sample(4000, generator=torch.Generator().manual_seed(0)).pow(2).mean().sqrt())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StabilityWarning)
        x = diffsolve.sample(g, torch.randn(256, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)),
                             solver=name, nfe=nfe, path="ddpm-linear").samples
    ratio = float(x.pow(2).mean().sqrt()) / data_rms
    assert (ratio > 3) == warns, ratio


def test_stability_warning_is_a_user_warning_the_driver_can_raise():
    assert issubclass(StabilityWarning, UserWarning)
    with pytest.warns(StabilityWarning, match="heun"):
        warnings.warn(get_solver("heun").grid_warning(_grid("karras", 2, "edm")), StabilityWarning)
