"""Noise searches of Ma et al. 2025 (Sec. 3.1): random search, zero-order search, search over
paths (diffsolve/steer/search.py, diffsolve/steer/path_search.py)."""

from __future__ import annotations

import math

import pytest
import torch

import diffsolve
from diffsolve.noise import NoiseSource
from diffsolve.rewards import FunctionReward, Linear
from diffsolve.steer.bon import BestOfN
from diffsolve.steer.path_search import PathSearch, renoise, search_stops
from diffsolve.steer.search import RandomSearch, neighbours
from rows import RowCounter

G = diffsolve.exact_model("gmm-2d")
R = Linear(torch.tensor([2.0, 0.0]))
SEARCHES = ("random-search", "zero-order", "path-search")




def base_rewards(seeds, nfe=20):
    x = diffsolve.sample(G, NoiseSource.initial(seeds, G.shape), solver="dpm++2m", nfe=nfe).samples
    return R(x)


def test_registered_with_papers():
    rows = {m["name"]: m for m in diffsolve.steer.methods()}
    for name in SEARCHES:
        assert name in rows and "Ma et al. 2025" in rows[name]["paper"] and rows[name]["exact"] is False


# -- random search ---------------------------------------------------------------------

def test_random_search_is_best_of_n_max():
    assert issubclass(RandomSearch, BestOfN) and RandomSearch.run is BestOfN.run
    kw = dict(num=5, particles=6, nfe=10, seeds=[3, 1, 4, 1, 5])
    a = diffsolve.steer(G, R, "random-search", **kw)
    b = diffsolve.steer(G, R, "best-of-n", select="max", solver="dpm++2m", **kw)
    assert torch.equal(a.samples, b.samples) and a.nfe == b.nfe == 60
    cand = a.info["candidate_rewards"]
    assert torch.equal(a.info["reward"], cand.max(1).values)


def test_random_search_options():
    with pytest.raises(ValueError, match="stochastic.*best-of-n"):
        diffsolve.steer(G, R, "random-search", num=1, particles=2, nfe=5, solver="ddpm")
    with pytest.raises(TypeError):
        diffsolve.steer(G, R, "random-search", num=1, particles=2, nfe=5, select="tilted")
    res = diffsolve.steer(G, R, "random-search", num=2, particles=3, nfe=7, solver="ddim", schedule="log-snr")
    assert res.nfe == 21 and res.info["solver"] == "ddim"


# -- zero-order search -----------------------------------------------------------------

def test_neighbours_on_the_sphere_and_fresh_each_iteration():
    pivot = NoiseSource.initial([0, 1], (3, 4))
    a = neighbours(pivot, [0, 1], 5, 0, 0.5)
    assert a.shape == (10, 3, 4)
    assert torch.allclose(a.flatten(1).norm(dim=1), torch.full((10,), math.sqrt(12.0), dtype=a.dtype))
    assert torch.equal(a, neighbours(pivot, [0, 1], 5, 0, 0.5))             # seeded: reproducible
    b = neighbours(pivot, [0, 1], 5, 1, 0.5)
    assert not torch.isclose(a, b).any()                                        # a fresh draw per iteration
    raw = neighbours(pivot, [0, 1], 5, 0, 0.5, normalise="none")
    dist = (raw - pivot.repeat_interleave(5, 0)).flatten(1).norm(dim=1)
    assert 0.5 * 1.5 < float(dist.mean()) < 0.5 * 5.5                           # ~ step sqrt(d) = 1.73
    assert torch.equal(neighbours(pivot[1:], [1], 5, 0, 0.5), a[5:])          # per-sample seeds


def test_zero_order_counts_every_call():
    for N, it, nfe in ((4, 3, 10), (2, 1, 7)):
        g = RowCounter(G)
        res = diffsolve.steer(g, R, "zero-order", num=3, particles=N, nfe=nfe, iterations=it)
        assert res.nfe == (1 + it * N) * nfe
        assert g.rows == 3 * res.nfe
        assert res.info["reward_calls"] == 3 * (1 + it * N)


def test_zero_order_starts_at_the_base_sample_and_only_improves():
    seeds = list(range(40, 56))
    res = diffsolve.steer(G, R, "zero-order", num=16, particles=4, nfe=20, seeds=seeds, iterations=5)
    hist = res.info["pivot_reward"]
    assert hist.shape == (6, 16)
    assert torch.allclose(hist[0], base_rewards(seeds).to(hist.dtype))       # round 0: the base sampler's sample
    assert bool((hist[1:] >= hist[:-1]).all())                                 # the pivot's reward never drops
    assert torch.allclose(R(res.samples).to(hist.dtype), hist[-1])
    assert torch.equal(res.info["reward"], hist[-1])
    moved = res.info["moved"]
    assert torch.equal(hist[1:] > hist[:-1], moved)


def test_zero_order_pivot_moves_over_iterations():
    """Improvement is possible (most base samples are not in the rightmost mode): the pivot
    moves, in several rounds, and its reward rises."""
    res = diffsolve.steer(G, R, "zero-order", num=16, particles=4, nfe=20, iterations=6)
    moved, hist = res.info["moved"], res.info["pivot_reward"]
    assert int(moved.any(1).sum()) >= 4                      # moves happen in at least 4 of the 6 rounds
    assert int(moved.sum(0).max()) >= 2                      # some pivot moves more than once
    assert float(hist[-1].mean()) > float(hist[0].mean()) + 1.0
    start = NoiseSource.initial(list(range(16)), G.shape)
    changed = (res.info["pivot_noise"] != start).any(1)
    assert torch.equal(changed, moved.any(0))


def test_zero_order_does_not_stall_without_improvement():
    """A reward that never improves never moves the pivot, yet every round tries different
    neighbours of it."""
    seen = []

    def flat(x):
        seen.append(x.clone())
        return torch.zeros(x.shape[0], dtype=x.dtype)

    res = diffsolve.steer(G, FunctionReward(flat), "zero-order", num=3, particles=4, nfe=8, iterations=3)
    assert not bool(res.info["moved"].any())
    assert len(seen) == 4 and seen[0].shape == (3, 2) and all(s.shape == (12, 2) for s in seen[1:])
    for a, b in zip(seen[1:], seen[2:]):
        assert not torch.isclose(a, b).all(1).any()             # no candidate repeats between rounds
    assert torch.equal(res.samples, seen[0])                  # the pivot's own sample is returned


def test_zero_order_options_and_batch_independence():
    with pytest.raises(ValueError, match="step"):
        diffsolve.steer(G, R, "zero-order", num=1, particles=2, nfe=5, step=0.0)
    with pytest.raises(ValueError, match="normalise"):
        diffsolve.steer(G, R, "zero-order", num=1, particles=2, nfe=5, normalise="l1")
    with pytest.raises(ValueError, match="stochastic"):
        diffsolve.steer(G, R, "zero-order", num=1, particles=2, nfe=5, solver="euler-a")
    kw = dict(particles=3, nfe=8, iterations=2, normalise="none", step=0.8)
    batch = diffsolve.steer(G, R, "zero-order", num=3, seeds=[7, 8, 9], **kw)
    alone = diffsolve.steer(G, R, "zero-order", num=1, seeds=[8], **kw)
    assert torch.allclose(batch.samples[1:2], alone.samples, atol=1e-12)


# -- search over paths -----------------------------------------------------------------

def test_search_stops_and_renoise():
    assert search_stops(20, 4) == [4, 8, 12, 16, 20]
    for n in range(2, 40):
        for L in range(1, n):
            st = search_stops(n, L)
            assert len(st) == L + 1 and st[-1] == n and st[0] >= 1
            assert all(b > a for a, b in zip(st, st[1:]))
    z = NoiseSource(list(range(20000))).normal(0, torch.empty(20000, 1, dtype=torch.float64))
    y = renoise(torch.zeros(20000, 1, dtype=torch.float64), 3.0, 5.0, z)
    assert abs(float(y.std()) - 4.0) < 0.1                    # the variance grows by s'^2 - s^2


def path_nfe(n, stops, renoise_steps, N, M):
    """The formula of the module docstring for a one-call-per-step solver."""
    total = N * stops[0]
    for a, b in zip(stops, stops[1:]):
        total += N * M * (b - a + renoise_steps + (b < n))
    return total


@pytest.mark.parametrize("N,M,L,back,nfe", [(4, 2, 4, 1, 20), (3, 3, 2, 2, 12), (2, 1, 1, 1, 5)])
def test_path_search_counts_every_call(N, M, L, back, nfe):
    g = RowCounter(G)
    res = diffsolve.steer(g, R, "path-search", num=3, particles=N, nfe=nfe, width=M, levels=L, renoise=back)
    stops = res.info["stops"]
    assert stops == search_stops(nfe, L)
    assert res.nfe == path_nfe(nfe, stops, back, N, M)
    assert g.rows == 3 * res.nfe
    assert res.info["score_calls"] == N * M * (L - 1)
    assert res.info["reward_calls"] == 3 * N * M * L


def test_path_search_counts_a_two_call_solver():
    g = RowCounter(G)
    res = diffsolve.steer(g, R, "path-search", num=2, particles=4, nfe=19, solver="heun")
    # 10 heun steps, stops 2 4 6 8 10: 4 x (2 x 2) + 8 x (3 x 6 + 5) + 8 x 3 score calls
    assert res.nfe == 224 and g.rows == 2 * 224


def test_path_search_result():
    res = diffsolve.steer(G, R, "path-search", num=6, particles=4, nfe=20)
    fin = res.info["final_rewards"]
    assert fin.shape == (6, 4) and bool((fin[:, :-1] >= fin[:, 1:]).all())    # kept, best first
    assert torch.allclose(R(res.samples).to(fin.dtype), fin[:, 0])
    assert torch.equal(res.info["reward"], res.info["kept_reward"][-1])
    lv = res.info["search_levels"]
    assert lv[-1] == 0.0 and all(a > b for a, b in zip(lv, lv[1:]))
    assert all(up > s for up, s in zip(res.info["renoise_levels"], lv))    # re-noised above each level
    assert res.eval_levels.numel() == 4 + 4 * 5 + 3                          # batched calls, in order


def test_path_search_options_and_batch_independence():
    with pytest.raises(ValueError, match="levels=4 needs a grid of at least 5 steps"):
        diffsolve.steer(G, R, "path-search", num=1, particles=2, nfe=4)
    with pytest.raises(ValueError, match="renoise=5"):
        diffsolve.steer(G, R, "path-search", num=1, particles=2, nfe=20, renoise=5)
    with pytest.raises(ValueError, match="width"):
        diffsolve.steer(G, R, "path-search", num=1, particles=2, nfe=20, width=0)
    with pytest.raises(ValueError, match="stochastic"):
        PathSearch(solver="ddpm")
    batch = diffsolve.steer(G, R, "path-search", num=3, particles=3, nfe=10, seeds=[7, 8, 9], levels=2)
    alone = diffsolve.steer(G, R, "path-search", num=1, particles=3, nfe=10, seeds=[8], levels=2)
    assert torch.allclose(batch.samples[1:2], alone.samples, atol=1e-12)


# -- all three beat the base sampler ---------------------------------------------------

@pytest.mark.parametrize("method", SEARCHES)
def test_searches_beat_the_base_sampler(method):
    seeds = list(range(100, 164))
    base = float(base_rewards(seeds).mean())
    res = diffsolve.steer(G, R, method, num=64, particles=4, nfe=20, seeds=seeds)
    got = float(R(res.samples).mean())
    assert got > base + 1.0, (method, got, base)
    assert torch.allclose(R(res.samples), res.info["reward"].to(res.samples.dtype))
