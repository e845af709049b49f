"""The discrete samplers on an exact model (a 4-token Markov chain whose conditionals given any
unmasked set are exact): contract (finishes, prompt kept, per-seed reproducible, independent of
the batch), unbiasedness of the exact samplers, the parallel decoders' tokens per call, joint
sampling's bias reduction, the no-change cache, and option errors."""

from __future__ import annotations

import pytest
import torch

from diffsolve.discrete import sample_tokens
from diffsolve.discrete.chain import MarkovChain
from diffsolve.discrete.samplers import SAMPLERS, get_sampler

L = 12


@pytest.fixture(scope="module")
def chain() -> MarkovChain:
    # a peaked, strongly correlated chain: parallel decoding from the product of marginals is visibly biased
    g = torch.Generator().manual_seed(0)
    return MarkovChain(torch.softmax(3 * torch.randn(4, 4, generator=g, dtype=torch.float64), 1))


def configs(chain) -> dict[str, dict]:
    """Options per case (name -> sampler and options); every registered sampler has one."""
    known = {
        "mdlm": {"nfe": 8}, "euler": {"nfe": 8}, "first-hitting": {}, "confidence": {"nfe": 8},
        "margin": {"nfe": 8}, "entropy": {"nfe": 8}, "threshold": {}, "factor": {},
        "adablock": {"delimiters": [0], "delimiter_tau": 0.3, "default_block": 4, "min_block": 2, "max_block": 8},
        "remask": {"nfe": 8}, "joint": {"nfe": 6, "energy": chain.log_prob, "candidates": 4},
    }
    cases = {name: dict(known.get(name, {"nfe": L}), sampler=name) for name in SAMPLERS}
    cases.update({
        "confidence-blocks": {"sampler": "confidence", "nfe": 8, "block_size": 4},
        "threshold-blocks-capped": {"sampler": "threshold", "nfe": 5, "block_size": 4},
        "factor-argmax": {"sampler": "factor", "temperature": 0.0},
        "joint-confidence": {"sampler": "joint", "nfe": 4, "energy": chain, "candidates": 3, "order": "confidence"},
        "remask-margin": {"sampler": "remask", "nfe": 6, "eta": 1.0, "score": "margin"},
    })
    return cases


CASES = ["mdlm", "euler", "first-hitting", "confidence", "margin", "entropy", "threshold", "factor", "adablock",
         "remask", "joint", "confidence-blocks", "threshold-blocks-capped", "factor-argmax", "joint-confidence",
         "remask-margin"]


def run(chain, case: dict, seeds, init=None, cache=True):
    opts = dict(case)
    name = opts.pop("sampler")
    return sample_tokens(chain, len(seeds), L, name, init=init, seeds=seeds, cache=cache, **opts)


def test_every_registered_sampler_has_a_case(chain):
    assert set(SAMPLERS) <= set(configs(chain)), "a new sampler needs a case in configs()"
    for name in SAMPLERS:
        doc = (SAMPLERS[name].__doc__ or "").strip().split("\n")[0]
        assert doc.endswith(".") and SAMPLERS[name].paper, name


# (1) contract: finishes, prompt kept, reproducible per seed, independent of the batch around it
@pytest.mark.parametrize("key", CASES + sorted(set(SAMPLERS) - set(CASES)))
def test_contract(chain, key):
    case = configs(chain)[key]
    prompt = chain.sample(1, L, seeds=[123])[0]
    init = torch.full((L,), chain.mask_id, dtype=torch.long)
    fixed = torch.tensor([0, 1, 7])
    init[fixed] = prompt[fixed]
    a = run(chain, case, [3, 4, 5], init)
    assert not bool((a.tokens == chain.mask_id).any())
    assert bool((a.tokens[:, fixed] == prompt[fixed]).all())
    b = run(chain, case, [3, 4, 5], init)
    assert torch.equal(a.tokens, b.tokens)
    c = run(chain, case, [9, 4], init)  # seed 4 in another batch, at another row
    assert torch.equal(c.tokens[1], a.tokens[1])


# (2) the exact samplers are unbiased: mean per-token NLL minus the entropy within 4 standard errors of 0
@pytest.mark.parametrize("sampler,nfe", [("first-hitting", None), ("mdlm", 4 * 32)])
def test_unbiased_on_the_exact_chain(chain, sampler, nfe):
    res = sample_tokens(chain, 256, 32, sampler, nfe=nfe, seeds=range(1000, 1256))
    b = chain.bias(res.tokens)
    assert abs(b["nll_minus_entropy"]) <= 4 * b["nll_minus_entropy_se"], b


# (3) tokens per call of the parallel decoders
def test_threshold_one_commits_one_token_per_call(chain):
    res = sample_tokens(chain, 8, L, "threshold", tau=1.0)
    assert res.nfe == L and res.info["steps"] == L and res.info["tokens_per_call"] == 1.0
    assert torch.equal(res.tokens, sample_tokens(chain, 8, L, "dimple", tau=1.0).tokens)  # the alias


@pytest.mark.parametrize("sampler", ["threshold", "factor"])
def test_parallel_decoders_commit_several_tokens_per_call(chain, sampler):
    res = sample_tokens(chain, 64, L, sampler)
    assert res.info["tokens_per_call"] > 1.2 and res.nfe < L, res.info
    capped = sample_tokens(chain, 64, L, sampler, nfe=3)  # a cap: the last step commits the rest
    assert capped.nfe <= 3 and not bool((capped.tokens == chain.mask_id).any())


def test_factor_rule_counts():
    from diffsolve.discrete.samplers.parallel import factor_commit, threshold_commit
    conf = torch.tensor([[0.99, 0.8, 0.95, 0.2], [0.1, 0.3, 0.2, 0.25]], dtype=torch.float64)
    allowed = torch.ones_like(conf, dtype=torch.bool)
    # row 0 sorted 0.99, 0.95, 0.8: n=1 -> 0.02, n=2 -> 0.15, n=3 -> 0.8 < 1, n=4 -> 4.0: commit 3
    assert factor_commit(conf, allowed, 1.0).tolist() == [[True, True, True, False], [False, True, False, False]]
    assert threshold_commit(conf, allowed, 0.9).tolist() == [[True, False, True, False], [False, True, False, False]]


def test_adablock_without_delimiters_is_fixed_block_threshold(chain):
    # no position ever reaches delimiter_tau = 1: every block has default_block positions
    a = sample_tokens(chain, 16, L, "adablock", delimiters=[0], delimiter_tau=1.0, default_block=4, min_block=2,
                      max_block=8, tau=0.8)
    b = sample_tokens(chain, 16, L, "threshold", block_size=4, tau=0.8)
    assert torch.equal(a.tokens, b.tokens) and a.info["blocks"] == 16 * 3
    c = sample_tokens(chain, 16, L, "adablock", delimiters=[0], delimiter_tau=0.2, default_block=4, min_block=1,
                      max_block=8)
    assert c.info["blocks"] != 16 * 3  # delimiters move the block ends


# (4) joint sampling: K = 32 candidates remove most of the bias of K = 1 at the same nfe
def test_joint_sampling_reduces_bias(chain):
    kw = dict(num=256, length=16, sampler="joint", nfe=4, energy=chain.log_prob, seeds=range(256))
    one = chain.bias(sample_tokens(chain, candidates=1, **kw).tokens)
    res = sample_tokens(chain, candidates=32, **kw)
    many = chain.bias(res.tokens)
    assert res.info["energy_calls"] == 4 and res.info["energy_evals"] == 4 * 256 * 32
    # K = 1 is parallel decoding from the product of marginals: far from the chain's law
    assert one["nll_minus_entropy"] > 10 * one["nll_minus_entropy_se"]
    # margin: at least 40% less NLL gap and 40% less bigram KL with 32 candidates
    assert many["nll_minus_entropy"] < 0.6 * one["nll_minus_entropy"], (one, many)
    assert many["bigram_kl"] < 0.6 * one["bigram_kl"], (one, many)


# (5) the no-change cache changes no token and never adds calls
@pytest.mark.parametrize("key", CASES)
def test_cache_changes_nothing(chain, key):
    case = configs(chain)[key]
    on, off = run(chain, case, [1, 2, 3], cache=True), run(chain, case, [1, 2, 3], cache=False)
    assert torch.equal(on.tokens, off.tokens)
    assert on.nfe <= off.nfe


def test_cache_saves_calls_for_mdlm(chain):
    on = sample_tokens(chain, 4, L, "mdlm", nfe=4 * L, cache=True)
    off = sample_tokens(chain, 4, L, "mdlm", nfe=4 * L, cache=False)
    assert torch.equal(on.tokens, off.tokens) and on.nfe < off.nfe == 4 * L


# (6) option errors name the bad value
@pytest.mark.parametrize("name,opts,match", [
    ("threshold", {"tau": 1.5}, "tau=1.5"), ("threshold", {"tau": 0}, "tau=0"),
    ("factor", {"factor": -1.0}, "factor=-1.0"), ("threshold", {"block_size": 0}, "got 0"),
    ("adablock", {"min_block": 4, "max_block": 2}, "max_block=2"), ("adablock", {"pick": "last"}, "'last'"),
    ("adablock", {"delimiters": "\n"}, "delimiters='\\\\n'"), ("adablock", {"default_block": 100}, "default_block=100"),
    ("remask", {"eta": 2.0}, "eta=2.0"), ("remask", {"final_steps": -1}, "final_steps=-1"),
    ("remask", {"score": "nope"}, "'nope'"), ("joint", {"candidates": 0}, "candidates=0"),
    ("joint", {"order": "left"}, "'left'"), ("joint", {"temperature": 0.0}, "temperature=0.0"),
])
def test_option_errors_name_the_value(name, opts, match):
    with pytest.raises(ValueError, match=match):
        get_sampler(name, **opts)


def test_run_time_errors_name_the_value(chain):
    with pytest.raises(ValueError, match="energy=None"):
        sample_tokens(chain, 2, L, "joint", nfe=4)
    with pytest.raises(ValueError, match="99"):
        sample_tokens(chain, 2, L, "adablock", delimiters=[99])
    with pytest.raises(TypeError, match="energy="):
        get_sampler("joint", energy=3)
