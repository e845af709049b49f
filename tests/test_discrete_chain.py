"""The exact Markov-chain denoiser (diffsolve.discrete.chain) against brute-force enumeration."""

import itertools
import math
import time

import pytest
import torch

from diffsolve.discrete.chain import MarkovChain, bigram_counts
from diffsolve.discrete.corpus import corpus_missing

V, L = 3, 6


def random_chain(seed: int, stationary_start: bool = True, zeros: bool = False) -> MarkovChain:
    g = torch.Generator().manual_seed(seed)
    P = -torch.log(torch.rand(V, V, generator=g, dtype=torch.float64))  # rows: Dirichlet(1, 1, 1)
    if zeros:  # some impossible transitions (the chain stays irreducible: 0->1->2->0 kept)
        P[0, 2] = 0.0
        P[2, 1] = 0.0
    P = P / P.sum(1, keepdim=True)
    mu = None
    if not stationary_start:
        mu = -torch.log(torch.rand(V, generator=g, dtype=torch.float64))
        mu = mu / mu.sum()
    return MarkovChain(P, mu)


def all_sequences(length: int = L) -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(V), repeat=length)), dtype=torch.long)


def brute_joint(chain: MarkovChain, seqs: torch.Tensor) -> torch.Tensor:
    p = chain.initial[seqs[:, 0]]
    for k in range(1, seqs.shape[1]):
        p = p * chain.transition[seqs[:, k - 1], seqs[:, k]]
    return p


def brute_probs(chain: MarkovChain, x: torch.Tensor) -> torch.Tensor:
    seqs = all_sequences(x.shape[1])
    joint = brute_joint(chain, seqs)
    out = torch.zeros(*x.shape, V, dtype=torch.float64)
    for r in range(x.shape[0]):
        unmasked = x[r] != chain.mask_id
        consistent = (seqs[:, unmasked] == x[r, unmasked]).all(1)
        w = joint * consistent
        for k in range(x.shape[1]):
            for c in range(V):
                out[r, k, c] = w[seqs[:, k] == c].sum()
        out[r] /= out[r].sum(-1, keepdim=True)
    return out


def mask_patterns() -> torch.Tensor:
    pats = [[True] * L, [False] * L,
            [False] + [True] * (L - 1), [True] * (L - 1) + [False],        # one unmasked at an end
            [False] + [True] * (L - 2) + [False],                          # both ends
            [k % 2 == 0 for k in range(L)], [k % 2 == 1 for k in range(L)],  # alternating
            [k != 2 for k in range(L)]]                                    # one unmasked in the middle
    g = torch.Generator().manual_seed(0)
    pats += (torch.rand(16, L, generator=g) < 0.6).tolist()
    return torch.tensor(pats)


@pytest.mark.parametrize("stationary_start,zeros", [(True, False), (False, False), (True, True), (False, True)])
def test_probs_match_brute_force(stationary_start, zeros):
    chain = random_chain(1, stationary_start, zeros)
    masks = mask_patterns()
    clean = chain.sample(len(masks), L, seeds=range(100, 100 + len(masks)))  # contexts of positive probability
    x = torch.where(masks, chain.mask_id, clean)
    p = chain.probs(x)
    assert p.shape == (len(masks), L, V) and p.dtype == torch.float64
    torch.testing.assert_close(p, brute_probs(chain, x), atol=1e-12, rtol=0)
    torch.testing.assert_close(p.sum(-1), torch.ones(len(masks), L, dtype=torch.float64), atol=1e-12, rtol=0)
    # all masked: the marginals mu P^k
    torch.testing.assert_close(p[0], chain.marginals(L), atol=1e-12, rtol=0)


def test_stationary_is_invariant_and_probs_time_free():
    chain = random_chain(2)
    pi = chain.initial
    torch.testing.assert_close(pi @ chain.transition, pi, atol=1e-14, rtol=0)
    x = torch.tensor([[3, 1, 3, 3, 0, 3]])
    assert torch.equal(chain.probs(x), chain.probs(x, t=0.3))
    assert chain.time_free


def test_log_prob_normalised_and_sequence_entropy():
    seqs = all_sequences()
    for stationary_start in (True, False):
        chain = random_chain(3, stationary_start)
        lp = chain.log_prob(seqs)
        assert lp.shape == (V ** L,) and lp.dtype == torch.float64
        assert abs(float(lp.exp().sum()) - 1) < 1e-12
        torch.testing.assert_close(lp.exp(), brute_joint(chain, seqs), atol=1e-15, rtol=1e-12)
        brute_h = float(-(lp.exp() * lp).sum())
        assert abs(chain.sequence_entropy(L) - brute_h) < 1e-12
    chain = random_chain(3)
    assert abs(chain.sequence_entropy(L) - chain.sequence_entropy(L - 1) - chain.entropy_rate()) < 1e-12
    assert chain.sequence_entropy(0) == 0.0


def test_exact_samples_are_unbiased():
    """n = 4000 exact samples: the NLL gap has mean 0 (bound: 4 standard errors); the bigram
    (x_k, x_k+1) at each position k is an independent multinomial across samples with cell
    probabilities mu_k[a] P[a, b], so its Pearson statistic is ~ chi^2 with 8 df (bound:
    df + 6 sqrt(2 df) = 32, P(exceed) ~ 1e-4 per position). Deterministic given the seeds."""
    chain = random_chain(4, stationary_start=False)
    n = 4000
    x = chain.sample(n, L, seeds=range(10_000, 10_000 + n))
    b = chain.bias(x)
    assert abs(b["nll_minus_entropy"]) < 4 * b["nll_minus_entropy_se"], b
    assert 0 <= b["bigram_kl"] < 5 * b["bigram_kl_noise"] and 0 <= b["unigram_kl"] < 5 * b["unigram_kl_noise"], b
    marg = chain.marginals(L)
    df = V * V - 1
    for k in range(L - 1):
        counts = torch.bincount(x[:, k] * V + x[:, k + 1], minlength=V * V).to(torch.float64)
        expected = n * (marg[k][:, None] * chain.transition).reshape(-1)
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        assert chi2 < df + 6 * math.sqrt(2 * df), (k, chi2)


def test_samples_depend_only_on_seed():
    chain = random_chain(5)
    a = chain.sample(3, 8, seeds=[5, 9, 11])
    b = chain.sample(2, 8, seeds=[11, 5])
    assert torch.equal(a[2], b[0]) and torch.equal(a[0], b[1])
    assert torch.equal(chain.sample(1, 5, seeds=[9])[0], a[1, :5])  # a shorter sample is a prefix
    assert torch.equal(chain.sample(3, 4), chain.sample(3, 4, seeds=[0, 1, 2]))
    # a zero-probability transition is never sampled
    z = random_chain(5, zeros=True)
    assert bool(torch.isfinite(z.log_prob(z.sample(500, 20))).all())


def test_fit_counts_and_rows():
    chain = MarkovChain.fit("abab", "abc")
    assert torch.equal(bigram_counts("abab", "abc"), torch.tensor([[0., 2, 0], [1, 0, 0], [0, 0, 0]]))
    torch.testing.assert_close(chain.transition, torch.tensor([[0., 1, 0], [1, 0, 0], [1 / 3, 1 / 3, 1 / 3]],
                                                              dtype=torch.float64))
    torch.testing.assert_close(chain.initial, torch.tensor([0.5, 0.5, 0], dtype=torch.float64))
    smooth = MarkovChain.fit("abab", "abc", smoothing=1.0)
    torch.testing.assert_close(smooth.transition[0], torch.tensor([0.2, 0.6, 0.2], dtype=torch.float64))
    assert chain.decode(chain.encode("cab")) == "cab"
    with pytest.raises(ValueError, match=r"\['z'\]"):
        MarkovChain.fit("abz", "abc")
    with pytest.raises(ValueError, match="-1"):
        MarkovChain.fit("ab", "ab", smoothing=-1)


def test_zero_probability_context_refused():
    cycle = MarkovChain(torch.tensor([[0., 1, 0], [0, 0, 1], [1, 0, 0]]))  # 0 -> 1 -> 2 -> 0
    assert cycle.probs(torch.tensor([[0, 3, 2]]))[0, 1].tolist() == [0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match=r"x\[0\] has probability 0 .* masked position 1"):
        cycle.probs(torch.tensor([[0, 3, 0]]))
    assert cycle.log_prob(torch.tensor([[0, 2]])).item() == -math.inf


def test_errors_name_the_value():
    with pytest.raises(ValueError, match=r"transition\[0, 1\] = -0.25 is negative"):
        MarkovChain(torch.tensor([[1.25, -0.25], [0.5, 0.5]]))
    with pytest.raises(ValueError, match=r"row 1 of transition sums to 0.9"):
        MarkovChain(torch.tensor([[0.5, 0.5], [0.5, 0.4]], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        MarkovChain(torch.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match=r"initial must have shape \(2,\).*\(3,\)"):
        MarkovChain(torch.eye(2), torch.ones(3) / 3)
    with pytest.raises(ValueError, match="initial sums to 0.5"):
        MarkovChain(torch.eye(2), torch.tensor([0.25, 0.25]))
    with pytest.raises(ValueError, match="vocab has 3 characters but .* V = 2"):
        MarkovChain(torch.full((2, 2), 0.5), vocab="abc")
    with pytest.raises(ValueError, match="no unique stationary law"):
        MarkovChain(torch.eye(2))  # two closed classes
    chain = random_chain(6)
    with pytest.raises(ValueError, match=r"x\[1, 2\] is the mask id 3"):
        chain.log_prob(torch.tensor([[0, 1, 2], [0, 1, 3]]))
    with pytest.raises(ValueError, match="max 7"):
        chain.probs(torch.tensor([[0, 7]]))
    with pytest.raises(ValueError, match="min -1"):
        chain.log_prob(torch.tensor([[0, -1]]))
    with pytest.raises(ValueError, match="max_len 4"):
        MarkovChain(chain.transition, max_len=4).sample(2, 5)


@pytest.mark.skipif(corpus_missing() is not None, reason=str(corpus_missing()))
def test_shakespeare_chain():
    from diffsolve.discrete.corpus import vocabulary
    t0 = time.perf_counter()
    chain = MarkovChain.shakespeare()
    load = time.perf_counter() - t0
    assert MarkovChain.shakespeare() is chain
    assert chain.vocab_size == 72 and chain.vocab == vocabulary() and chain.max_len == 256
    assert bool((chain.transition > 0).all())
    h = chain.entropy_rate()
    print(f"\nShakespeare bigram chain: entropy rate {h:.4f} nats/char ({h / math.log(2):.3f} bits), "
          f"loaded in {load:.2f} s")
    assert math.isfinite(h) and 1.5 < h < 3.5
    x = chain.sample(8, 256, seeds=range(8))
    xm = torch.where(torch.rand(8, 256, generator=torch.Generator().manual_seed(0)) < 0.8, chain.mask_id, x)
    chain.probs(xm)  # build the power tables
    t0 = time.perf_counter()
    p = chain.probs(xm)
    dt = time.perf_counter() - t0
    print(f"probs (8, 256): {dt * 1e3:.1f} ms")
    assert p.shape == (8, 256, 72) and p.dtype == torch.float64 and dt < 0.5
    torch.testing.assert_close(p.sum(-1), torch.ones(8, 256, dtype=torch.float64), atol=1e-12, rtol=0)
    b = chain.bias(chain.sample(128, 128, seeds=range(500, 628)))
    assert abs(b["nll_minus_entropy"]) < 4 * b["nll_minus_entropy_se"], b
    with pytest.raises(ValueError, match="257"):
        chain.probs(torch.zeros(1, 257, dtype=torch.long))
