"""The solver state: every solver records x0-hat (``SolverState.x0``), and ``reindex`` selects
rows of everything the state carries (y, x0, history, extra, noise seeds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import diffsolve
from diffsolve.noise import NoiseSource
from diffsolve.solvers import SOLVERS, get_solver

F64 = torch.float64
G2 = diffsolve.exact_model("gmm-2d")


def _noise(b=4, seed=0):
    return torch.randn(b, 2, dtype=F64, generator=torch.Generator().manual_seed(seed))


class Recorder:
    """The exact denoiser, recording every call's input and output."""

    def __init__(self):
        self.calls: list[tuple[torch.Tensor, float, torch.Tensor]] = []

    def __call__(self, y, s):
        out = G2.denoiser(y, s)
        self.calls.append((y.clone(), float(s), out))
        return out


def _grid(slv):
    if slv.adaptive:  # one adaptive interval, then the step to zero
        return torch.tensor([40.0, 0.05, 0.0], dtype=F64)
    return torch.tensor([80.0, 20.0, 5.0, 1.2, 0.3, 0.05, 0.0], dtype=F64)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_every_solver_records_x0_hat_of_each_step(name):
    """After each step state.x0 is the first denoiser output of that step: D(y_i, s_i) for an
    exact model (EDM's churn sampler: at its churned point (y_hat, s_hat); adaptive solvers:
    at the start of the last accepted sub-step)."""
    slv = get_solver(name, rtol=0.05) if get_solver(name).adaptive else get_solver(name)
    sigmas = _grid(slv)
    rec = Recorder()
    noise = NoiseSource([3, 1, 4, 1]) if slv.stochastic else None
    state = slv.init(_noise() * 80.0 if not slv.adaptive else _noise() * 40.0, sigmas, noise)
    assert state.x0 is None
    for i in range(sigmas.numel() - 1):
        y_i, s_i, first = state.y, state.at(i), len(rec.calls)
        state = slv.step(state, rec)
        assert state.x0 is not None and state.x0.shape == y_i.shape
        if slv.adaptive and state.at(i + 1) > 0:
            levels = (s_i,) + state.extra["info"]["levels"]
            start = levels[-2]  # the level the last accepted sub-step started at
            # the first call of that sub-step's attempt is the last call made at that level
            y_start, s_start, out = [c for c in rec.calls[first:] if c[1] == start][-1]
            torch.testing.assert_close(state.x0, out, rtol=0, atol=0)
            torch.testing.assert_close(state.x0, G2.denoiser(y_start, s_start), rtol=0, atol=0)
            continue
        y_in, s_in, out = rec.calls[first]
        torch.testing.assert_close(state.x0, out, rtol=0, atol=0)
        if name != "edm-churn":
            assert s_in == s_i and torch.equal(y_in, y_i)
            torch.testing.assert_close(state.x0, G2.denoiser(y_i, s_i), rtol=0, atol=0)
        else:  # churn raises the level first: s_hat >= s_i
            assert s_in >= s_i


def test_reindex_selects_rows_of_everything():
    slv = get_solver("sde-dpm++3m")
    src = NoiseSource([10, 11, 12, 13])
    state = slv.init(_noise() * 80.0, torch.tensor([80.0, 10.0, 2.0, 0.5, 0.1, 0.0], dtype=F64), src)
    for _ in range(3):  # history of length 2 and an extra batch tensor
        state = slv.step(state, G2.denoiser)
    state = state.replace(extra={**state.extra, "w": torch.arange(4.0), "note": "kept", "h": 0.5})
    assert len(state.history) == 2
    idx = torch.tensor([2, 2, 0])
    new = state.reindex(idx)
    assert torch.equal(new.y, state.y[idx]) and torch.equal(new.x0, state.x0[idx])
    assert all(torch.equal(a, b[idx]) for a, b in zip(new.history, state.history))
    assert torch.equal(new.extra["w"], torch.tensor([2.0, 2.0, 0.0]))
    assert new.extra["note"] == "kept" and new.extra["h"] == 0.5 and new.i == state.i
    assert new.noise.seeds == [12, 12, 10]
    # the noise of the re-indexed source is that of the chosen seeds, row for row
    like = torch.empty(3, 5, dtype=F64)
    torch.testing.assert_close(new.noise.normal(7, like, draw=1),
                               NoiseSource([12, 12, 10]).normal(7, like, draw=1), rtol=0, atol=0)
    full = src.normal(7, torch.empty(4, 5, dtype=F64), draw=1)
    torch.testing.assert_close(new.noise.normal(7, like, draw=1), full[idx], rtol=0, atol=0)
    # and the re-indexed state steps on like any other
    assert slv.step(new, G2.denoiser).y.shape == (3, 2)
    with pytest.raises(ValueError, match=r"rows in \[0, 4\)"):
        state.reindex(torch.tensor([0, 4]))


@pytest.mark.parametrize("bad,needle", [
    ([0, 1.5], "seeds[1] = 1.5 is not an integer"),
    ([2.0], "seeds[0] = 2.0 is not an integer"),
    ([True, 1], "seeds[0] = True is not an integer"),
    ([0, "3"], "seeds[1] = '3' is not an integer"),
    ([-1], "seeds[0] = -1 is out of range"),
    ([0, 0, 2**63], f"seeds[2] = {2**63} is out of range"),
    ([torch.tensor(1.0)], "seeds[0] = tensor(1.) is not an integer"),
    (torch.tensor([1.0, 2.0]), "seeds[0] = tensor(1.) is not an integer"),
    (7, "seeds must be a sequence"),
])
def test_seeds_must_be_integers_in_range(bad, needle):
    with pytest.raises(ValueError) as e:
        NoiseSource(bad)
    assert needle in str(e.value) and "integers in [0, 2**63)" in str(e.value)


def test_integer_seeds_of_every_kind_give_the_same_noise():
    like = torch.empty(3, 4, dtype=F64)
    ref = NoiseSource([5, 0, 2**63 - 1]).normal(2, like)
    for seeds in ([np.int64(5), np.uint8(0), 2**63 - 1], [torch.tensor(5), torch.tensor(0, dtype=torch.int32), 2**63 - 1],
                  torch.tensor([5, 0, 2**63 - 1])):
        assert torch.equal(NoiseSource(seeds).normal(2, like), ref)
    # the values themselves are pinned (tests and shipped benchmark results depend on them)
    z = NoiseSource([0, 12345]).normal(0, torch.empty(2, 3, dtype=F64))
    assert z.tolist() == [[-0.48248926203927744, -0.018940247127572266, -0.416239370335145],
                          [-1.3100015672638432, 0.122962016039175, 0.278066201199518]]
    assert float(NoiseSource.initial([7], (1,))[0, 0]) == float.fromhex("0x1.ab027f87aadc9p-1")
