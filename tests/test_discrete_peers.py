"""The discrete peer (diffsolve.bench.discrete_peers): flow_matching's MixtureDiscreteEulerSolver on
our exact Markov chain makes exactly the model calls asked (counted at our side too), is close to
exact at many steps (and visibly biased at few: the check has power), reproduces per seed
independently of the batch, and leaves the caller's random state alone; the text benchmark has
peer cells in its exact part only."""

from __future__ import annotations

import math

import pytest
import torch

from diffsolve.bench.discrete_peers import discrete_peer_available, flow_matching_step_size, run_flow_matching
from diffsolve.discrete.base import TokenDenoiserWrapper
from diffsolve.discrete.chain import MarkovChain

pytestmark = pytest.mark.skipif(not discrete_peer_available("flow_matching"),
                                reason="flow_matching is not installed (pip install --no-deps flow-matching==1.0.10)")


@pytest.fixture(scope="module")
def chain() -> MarkovChain:
    # the peaked, strongly correlated 4-token chain of test_discrete_samplers
    g = torch.Generator().manual_seed(0)
    return MarkovChain(torch.softmax(3 * torch.randn(4, 4, generator=g, dtype=torch.float64), 1))


class Counted(TokenDenoiserWrapper):
    def __init__(self, inner):
        super().__init__(inner)
        self.calls = 0

    def probs(self, x, t=None):
        self.calls += 1
        return self.inner.probs(x, t)


def test_step_size_gives_the_step_count():
    for n in range(2, 1001):  # the solver's count: ceil((t_final - t_init) / step_size)
        assert math.ceil(1.0 / flow_matching_step_size(n)) == n, n
        assert math.ceil(0.999 / flow_matching_step_size(n, 0.0, 0.999)) == n, n
    with pytest.raises(ValueError, match="nfe >= 2"):
        flow_matching_step_size(1)


@pytest.mark.parametrize("nfe", [1, 2, 3, 7, 49])  # 1 / (1/49) rounds above 49
def test_exact_number_of_calls(chain, nfe):
    m = Counted(chain)
    res = run_flow_matching(m, 3, 6, nfe, seeds=[0, 1, 2])
    assert res.nfe == nfe and res.info["calls_total"] == 3 * nfe and m.calls == 3 * nfe
    assert res.info["per_sample_nfe"] == nfe and res.info["tokens_per_call"] == 6 / nfe
    assert res.tokens.shape == (3, 6) and int(res.tokens.max()) < chain.vocab_size
    m.calls = 0
    res = run_flow_matching(m, 3, 6, nfe, seeds=[0, 1, 2], batched=True)
    assert res.nfe == nfe and m.calls == nfe


def test_seeds_reproduce_independently_of_the_batch(chain):
    state = torch.random.get_rng_state()
    a = run_flow_matching(chain, 3, 10, 5, seeds=[4, 8, 15]).tokens
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's generator is left alone
    assert torch.equal(run_flow_matching(chain, 3, 10, 5, seeds=[4, 8, 15]).tokens, a)
    assert torch.equal(run_flow_matching(chain, 2, 10, 5, seeds=[15, 4]).tokens, a[[2, 0]])
    b = run_flow_matching(chain, 3, 10, 5, seeds=[4, 8, 15], batched=True).tokens
    assert torch.equal(run_flow_matching(chain, 3, 10, 5, seeds=[4, 8, 15], batched=True).tokens, b)


def test_nearly_exact_at_many_steps_and_biased_at_few(chain):
    # nfe = 4 L: about one position unmasked per call, so the samples are close to exact
    # (the peer's jump probability 1 - exp(-h / (1 - t)) and its last step, which draws every
    # position still masked at t = 1 - h independently, are its only approximations)
    n, L = 512, 16
    many = chain.bias(run_flow_matching(chain, n, L, 4 * L, seeds=[7] * n, batched=True).tokens)
    assert abs(many["nll_minus_entropy"]) <= 4 * many["nll_minus_entropy_se"], many
    few = chain.bias(run_flow_matching(chain, n, L, 2, seeds=[7] * n, batched=True).tokens)
    assert few["nll_minus_entropy"] > 10 * few["nll_minus_entropy_se"], few  # the check has power


def test_bench_cells_exact_part_only():
    cells = pytest.importorskip("diffsolve.bench.text").cells
    exact = [c for c in cells("exact") if c["sampler"].startswith("peer:")]
    assert [c["label"] for c in exact] == ["peer:flow_matching"] * 5
    assert sorted(c["frac"] for c in exact) == [1 / 16, 1 / 8, 1 / 4, 1 / 2, 1]
    assert not [c for c in cells("model") if c["sampler"].startswith("peer:")]
