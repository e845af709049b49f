"""The text models (diffsolve.discrete.models) and text metrics (diffsolve.discrete.metrics) on
tiny random CharTransformers saved in the format that ``diffsolve train-text`` writes."""

import itertools
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

import diffsolve
from diffsolve.discrete.metrics import distinct_ngrams, generative_nll, ngram_kl, text_report, unigram_entropy
from diffsolve.discrete.models import (TEXT_SHIPPED, ARTextModel, MaskedTextModel, load_text_model,
                                       shipped_text_models)
from diffsolve.discrete.train import TextTrainConfig, _save_model
from diffsolve.models import load_model
from diffsolve.models.checkpoint import WEIGHTS_DIR
from diffsolve.nets.transformer import CharTransformer


def _save(tmp_path, name, vocab, causal, seq_len=12, scale=1.0, seed=0):
    torch.manual_seed(seed)
    cfg = TextTrainConfig(objective="ar" if causal else "mdlm", dim=16, depth=1, heads=2, seq_len=seq_len)
    net = CharTransformer(len(vocab), cfg.dim, cfg.depth, cfg.heads, cfg.seq_len, causal=causal)
    with torch.no_grad():  # sharper than the init, so that the conditionals differ from uniform
        net.out.weight.mul_(scale)
    d = tmp_path / name
    os.makedirs(d)
    _save_model(str(d), net, cfg, vocab, {"steps": 0})
    return str(d), net.eval()


@pytest.fixture
def masked(tmp_path):
    return _save(tmp_path, "masked", "abcde", causal=False)


@pytest.fixture
def ar(tmp_path):
    return _save(tmp_path, "ar", "abcde", causal=True, scale=5.0)


# --- loading ---------------------------------------------------------------------------------

def test_masked_model_loads_by_every_path_and_gives_probabilities(masked):
    d, net = masked
    m = load_text_model(d)
    assert isinstance(m, MaskedTextModel) and m.time_free and m.mask_id == 5 and m.max_len == 12
    assert m.vocab == "abcde" and m.meta["name"] == "masked" and m.meta["kind"] == "masked"
    for other in (os.path.join(d, "model.json"), os.path.join(d, "model.safetensors"), os.path.join(d, "model")):
        assert isinstance(load_text_model(other), MaskedTextModel)
    assert isinstance(diffsolve.load(d), MaskedTextModel) and isinstance(load_model(d), MaskedTextModel)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 5, (7, 12), generator=g)
    masked_at = torch.rand(7, 12, generator=g) < 0.5
    x = torch.where(masked_at, torch.full_like(x, 5), x).int()  # any integer dtype
    p = m.probs(x)
    assert p.dtype == torch.float64 and p.shape == (7, 12, 5)
    assert torch.allclose(p.sum(-1), torch.ones(7, 12, dtype=torch.float64), atol=1e-12, rtol=0)
    onehot = torch.nn.functional.one_hot(x.long().clamp_max(4), 5).double()
    assert torch.equal(p[~masked_at], onehot[~masked_at])
    with torch.no_grad():
        want = torch.softmax(net(x.long()).double(), -1)
    assert torch.allclose(p[masked_at], want[masked_at], atol=1e-12, rtol=0)
    m.batch_size = 3  # chunking does not change anything
    assert torch.allclose(m.probs(x), p, atol=1e-6, rtol=0)
    assert m.probs(x[:, :0]).shape == (7, 0, 5)
    assert m.decode(x[0].long()).count("_") == int(masked_at[0].sum())


def test_masked_model_checks_its_input(masked):
    m = load_text_model(masked[0])
    with pytest.raises(ValueError, match="outside"):
        m.probs(torch.tensor([[0, 6]]))
    with pytest.raises(ValueError, match="at most 12"):
        m.probs(torch.zeros(1, 13, dtype=torch.long))
    with pytest.raises(ValueError, match="integer tensor"):
        m.probs(torch.zeros(1, 3))


def _break(d, edit_meta=None, edit_weights=None):
    path = os.path.join(d, "model.json")
    with open(path) as f:
        meta = json.load(f)
    if edit_meta:
        edit_meta(meta)
        with open(path, "w") as f:
            json.dump(meta, f)
    if edit_weights:
        w = os.path.join(d, "model.safetensors")
        sd = load_file(w)
        edit_weights(sd)
        save_file(sd, w)
    return path


@pytest.mark.parametrize("edit_meta, edit_weights, message", [
    (lambda m: m.update(format="diffsolve-text/9"), None, "not a diffsolve text model"),
    (lambda m: m.update(kind="bert"), None, "unknown kind 'bert'"),
    (lambda m: m.pop("vocab"), None, "missing required key.*vocab"),
    (lambda m: m.update(vocab="abcd"), None, "vocab has 4 characters but arch_kwargs.vocab_size is 5"),
    (lambda m: m.update(vocab="abcda"), None, "repeats"),
    (lambda m: m["arch_kwargs"].update(window=3), None, "unknown key.*window"),
    (lambda m: m["arch_kwargs"].update(causal=True), None, "needs arch_kwargs.causal = False"),
    (lambda m: (m.update(vocab="abcdef"), m["arch_kwargs"].update(vocab_size=6)), None,
     "wrong shape: tok.weight.*vocab"),
    (None, lambda sd: sd.pop("norm.bias"), "missing norm.bias"),
    (None, lambda sd: sd.update(extra=torch.zeros(2)), "unexpected extra"),
    (None, lambda sd: sd["out.bias"].fill_(float("nan")), "non-finite weights.*out.bias"),
])
def test_bad_checkpoints_are_refused_with_the_file_and_the_problem(masked, edit_meta, edit_weights, message):
    d = masked[0]
    _break(d, edit_meta, edit_weights)
    with pytest.raises(ValueError, match=message) as e:
        load_text_model(d)
    assert os.path.join(d, "model.") in str(e.value)
    with pytest.raises(ValueError, match=message):  # the same through diffsolve.load
        diffsolve.load(d)


def test_missing_files_and_unknown_names_are_refused(tmp_path, masked):
    with pytest.raises(FileNotFoundError, match="no model.json"):
        load_text_model(str(tmp_path))
    with pytest.raises(ValueError, match="unknown text model 'hamlet'"):
        load_text_model("hamlet")
    os.remove(os.path.join(masked[0], "model.safetensors"))
    with pytest.raises(FileNotFoundError, match="model.safetensors: weights file not found"):
        load_text_model(masked[0])
    for name in TEXT_SHIPPED:
        if name not in shipped_text_models():
            with pytest.raises(FileNotFoundError, match=f"train-text --preset {name} --export"):
                diffsolve.load(name)


def test_shipped_text_models_and_layering():
    from diffsolve.discrete import models

    assert models.WEIGHTS_DIR == WEIGHTS_DIR
    for name in shipped_text_models():  # present once exported
        m = diffsolve.load(name)
        assert isinstance(m, MaskedTextModel if name == "shakespeare" else ARTextModel) and m.meta["name"] == name
    code = "import sys, diffsolve; print(any(k.startswith('diffsolve.discrete') for k in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.stdout.strip() == "False"  # the registry imports the text models lazily


# --- the autoregressive model ----------------------------------------------------------------

def test_ar_log_prob_is_the_sum_of_incremental_conditionals(ar):
    d, net = ar
    m = load_text_model(d)
    assert isinstance(m, ARTextModel) and m.bos_id == 5 and m.meta["kind"] == "autoregressive"
    x = torch.randint(0, 5, (4, 12), generator=torch.Generator().manual_seed(1))
    want = torch.zeros(4, dtype=torch.float64)
    with torch.no_grad():
        for k in range(12):  # brute force: the prefix alone, the last position's logits
            inp = torch.cat([torch.full((4, 1), 5), x[:, :k]], 1)
            want += torch.log_softmax(net(inp)[:, -1].double(), -1).gather(1, x[:, k:k + 1])[:, 0]
    got = m.log_prob(x)
    assert got.dtype == torch.float64 and got.shape == (4,)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)
    assert torch.allclose(m.nll_per_char(x), -want / 12, rtol=1e-5, atol=1e-6)
    m.batch_size = 3
    assert torch.allclose(m.log_prob(x), got, rtol=1e-6, atol=1e-6)
    c = m.conditionals(x)
    assert c.shape == (4, 12, 5) and torch.allclose(c.sum(-1), torch.ones(4, 12, dtype=torch.float64), atol=1e-12)
    prefix = torch.tensor([float(c[b, range(5), x[b, :5]].log().sum()) for b in range(4)], dtype=torch.float64)
    assert torch.allclose(m.log_prob(x[:, :5]), prefix, atol=1e-5)  # causal: a prefix's score is its own
    assert torch.equal(m.log_prob(x[:, :0]), torch.zeros(4, dtype=torch.float64))
    for bad, msg in [(torch.tensor([[0, 5]]), "outside"), (torch.zeros(1, 13, dtype=torch.long), "at most 12")]:
        with pytest.raises(ValueError, match=msg):
            m.log_prob(bad)


def test_ar_probabilities_of_all_sequences_sum_to_one(tmp_path):
    d, _ = _save(tmp_path, "tiny", "xy", causal=True, seq_len=4, scale=5.0)
    m = load_text_model(d)
    allseq = torch.tensor(list(itertools.product(range(2), repeat=4)))
    lp = m.log_prob(allseq)
    assert abs(float(lp.exp().sum()) - 1.0) < 1e-12
    assert float(lp.exp().max()) > 2 / 16  # not uniform: the check has teeth
    # Gumbel-max sampling draws from these probabilities
    x = m.sample(4000, 4, seeds=range(4000))
    idx = (x * torch.tensor([8, 4, 2, 1])).sum(1)
    freq = torch.bincount(idx, minlength=16).double() / 4000
    p = lp.exp()
    assert float(((freq - p).abs() / (p * (1 - p) / 4000).sqrt()).max()) < 5


def test_ar_sampling_is_reproducible_per_seed(ar):
    m = load_text_model(ar[0])
    a = m.sample(3, 10, seeds=[5, 6, 7])
    assert a.shape == (3, 10) and a.dtype == torch.long and int(a.max()) < 5
    assert torch.equal(a, m.sample(3, 10, seeds=[5, 6, 7]))
    assert torch.equal(a[1:2], m.sample(1, 10, seeds=[6]))  # a sample depends on its seed only
    assert not torch.equal(a, m.sample(3, 10, seeds=[8, 9, 10]))
    cold = m.sample(3, 10, seeds=[5, 6, 7], temperature=1e-6)  # near-greedy: the same for every seed
    assert torch.equal(cold[0], cold[1]) and torch.equal(cold[0], cold[2])
    for kw, msg in [(dict(num=2, length=3, seeds=[1]), "2 samples"), (dict(num=1, length=13, seeds=[1]), "max_len"),
                    (dict(num=1, length=3, seeds=[1], temperature=0.0), "temperature"),
                    (dict(num=1, length=3, seeds=[-1]), "out of range")]:
        with pytest.raises(ValueError, match=msg):
            m.sample(**kw)


# --- metrics ---------------------------------------------------------------------------------

def test_metrics_on_hand_made_examples():
    assert distinct_ngrams("abab", 1) == 0.5
    assert distinct_ngrams("abab", 2) == 2 / 3
    assert distinct_ngrams(torch.tensor([[0, 1, 0, 1], [1, 0, 1, 0]]), 2) == 2 / 6  # pooled: ab, ba only
    assert distinct_ngrams(["ab", "ba"], 2) == 1.0  # no n-gram across samples
    v = 7
    uniform = torch.arange(v).repeat(3)[None]
    assert abs(unigram_entropy(uniform, v) - math.log(v)) < 1e-12
    assert unigram_entropy("aaaa") == 0.0
    with pytest.raises(ValueError, match="vocab_size 3"):
        unigram_entropy(torch.tensor([[0, 3]]), 3)
    assert ngram_kl("abcabc", "cbacba", 1) == 0.0
    assert ngram_kl("abab", "abab", 2) == 0.0
    assert ngram_kl("aaaa", "abab", 1, eps=0.0) == pytest.approx(math.log(2))
    assert ngram_kl("abab", "aaaa", 1, eps=0.0) == math.inf
    assert 0 < ngram_kl("abab", "aaaa", 1, eps=0.1) < math.inf
    with pytest.raises(ValueError, match="positive integer"):
        distinct_ngrams("ab", 0)


def test_generative_nll_and_report(ar):
    m = load_text_model(ar[0])
    g = torch.Generator().manual_seed(3)
    s = torch.randint(0, 5, (4, 8), generator=g)
    ref = torch.randint(0, 5, (9, 8), generator=g)
    r = generative_nll(m, s)
    per = m.nll_per_char(s)
    assert r["nll"] == pytest.approx(float(per.mean()), abs=1e-12)
    assert r["nll_se"] == pytest.approx(float(per.std() / 2), abs=1e-12) and r["ppl"] == pytest.approx(math.exp(r["nll"]))
    assert generative_nll(m, [m.decode(row) for row in s])["nll"] == pytest.approx(r["nll"], abs=1e-9)
    rep = text_report(s, ref, m)
    assert rep["num_samples"] == 4 and rep["length"] == 8 and rep["kl_target_windows"] == 5
    keys = {"unigram_entropy", "distinct_2", "distinct_3", "distinct_4", "kl_1", "kl_2", "kl_3", "nll", "nll_se", "ppl"}
    assert set(rep["samples"]) == keys and set(rep["reference"]) == keys
    assert rep["reference"]["nll"] == pytest.approx(float(m.nll_per_char(ref[:4]).mean()), abs=1e-9)
    assert rep["samples"]["distinct_2"] == distinct_ngrams(s, 2)
    assert rep["samples"]["kl_2"] == ngram_kl(s, ref[4:], 2)
    assert set(text_report(s, ref)["samples"]) == keys - {"nll", "nll_se", "ppl"}
    with pytest.raises(ValueError, match="at least 2 \\* 4"):
        text_report(s, ref[:7])
    with pytest.raises(ValueError, match="one length"):
        text_report(s, ref[:, :6])
