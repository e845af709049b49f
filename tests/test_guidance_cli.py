"""``diffsolve sample --guide``: cfg (the default) unchanged, and adaptive-cfg, classifier and
free guidance equal to the library's wrappers on the same noise (so the CLI steers the
unconditional MNIST model toward the labels); bad combinations refused as usage errors.
Fast: 4 samples, 5 NFE."""

import pytest
import torch

import diffsolve
from diffsolve.cli import main
from diffsolve.guidance import CFG, AdaptiveGuidance, ClassifierGuidance, UniversalGuidance
from diffsolve.solvers import NoiseSource

FAST = ["--num", "4", "--solver", "dpm++2m", "--nfe", "5", "--quiet", "--no-metrics", "--out", ""]
LABELS = torch.tensor([0, 1, 2, 0])  # --label 0 1 2 cycled over 4 samples


@pytest.fixture(scope="module")
def mnist():
    return diffsolve.load("mnist")


def _cli(tmp_path, *flags: str) -> torch.Tensor:
    out = str(tmp_path / "x.pt")
    assert main(["sample", "--model", "mnist", "--label", "0", "1", "2", *FAST, "--save-tensor", out, *flags]) == 0
    return torch.load(out)


def _lib(den, labels=LABELS) -> torch.Tensor:
    seeds = list(range(4))
    res = diffsolve.sample(den, NoiseSource.initial(seeds, (1, 28, 28)), solver="dpm++2m", nfe=5, seeds=seeds,
                           cond={"labels": labels})
    return res.samples.float()


def test_cfg_is_the_default_and_unchanged(tmp_path, mnist, capsys):
    x = _cli(tmp_path, "--guidance", "2")
    text = capsys.readouterr().out
    assert torch.equal(x, _cli(tmp_path, "--guidance", "2", "--guide", "cfg"))
    assert capsys.readouterr().out == text                       # same words, same samples
    assert torch.equal(x, _lib(CFG(mnist, 2.0)))


def test_adaptive_cfg_is_adaptive_guidance_with_its_default(tmp_path, mnist, capsys):
    x = _cli(tmp_path, "--guidance", "2", "--guide", "adaptive-cfg")
    ag = AdaptiveGuidance(mnist, 2.0)
    assert torch.equal(x, _lib(ag))
    assert f"gamma {ag.gamma:g}" in capsys.readouterr().out


def test_classifier_and_free_steer_the_unconditional_model(tmp_path, mnist):
    from diffsolve.models.noisy_classifier import load_noisy_classifier
    from diffsolve.models.verifier import class_rewards

    x = _cli(tmp_path, "--guidance", "4", "--guide", "classifier")
    assert torch.equal(x, _lib(ClassifierGuidance(mnist, load_noisy_classifier(), 4.0)))
    x = _cli(tmp_path, "--guidance", "8", "--guide", "free")
    ug = UniversalGuidance(mnist, class_rewards(mnist, LABELS), 8.0)
    assert torch.equal(x, _lib(ug, torch.full((4,), mnist.null_label)))
    # the guidance moved the samples away from the plain unconditional model's
    assert (x - _lib(mnist, torch.full((4,), mnist.null_label))).abs().max() > 0.1


@pytest.mark.parametrize("flags, words", [
    (["--model", "digits", "--label", "1", "--guide", "classifier"], "not MNIST-shaped"),
    (["--model", "gmm-2d", "--guide", "free"], "needs --label"),
    (["--model", "mnist", "--label", "1", "--guide", "free", "--guidance-interval", "0", "1"],
     "only with --guide cfg or adaptive-cfg"),
    (["--model", "mnist", "--label", "1", "--guide", "classifier", "--guidance", "-1"], "scale >= 0"),
    (["--model", "mnist", "--label", "1", "--guide", "adaptive-cfg", "--out-dir", "DIR"], "not available with --out-dir"),
    (["--model", "mnist", "--label", "1", "--guide", "nope"], "invalid choice"),
])
def test_bad_combinations_are_usage_errors(tmp_path, capsys, flags, words):
    flags = [str(tmp_path / "run") if f == "DIR" else f for f in flags]
    out = [] if "--out-dir" in flags else ["--out", ""]
    assert main(["sample", *flags, "--num", "4", "--nfe", "5", "--quiet", *out]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_guidance_bench_cli_writes_and_resumes(tmp_path, capsys):
    import json

    from diffsolve.bench.guidance_mnist import DEFAULT_CONFIGS

    out = str(tmp_path / "g")
    assert main(["guidance-bench", "mnist", "--per-class", "2", "--nfe", "2", "--out", out, "--quiet"]) == 0
    entries = json.load(open(out + ".json"))
    assert [e["config"] for e in entries] == [c[0] for c in DEFAULT_CONFIGS]
    by = {e["kind"] + str(e["scale"]): e for e in entries}
    assert by["cfg2.0"]["rows_per_sample"] == 4 and by["cfg1.0"]["rows_per_sample"] == 2
    assert 2 <= by["adaptive2.0"]["rows_per_sample"] <= 4 and by["free8.0"]["rows_per_sample"] == 4
    assert by["classifier0.1"]["aux_per_sample"] == 2 and by["free8.0"]["aux_per_sample"] == 16   # 8 smoothing draws
    md = open(out + ".md").read()
    assert md.count("\n| ") == len(entries) + 1 and "guidance-bench mnist" in md
    capsys.readouterr()
    assert main(["guidance-bench", "mnist", "--per-class", "2", "--nfe", "2", "--out", out]) == 0
    assert json.load(open(out + ".json")) == entries      # resumed: nothing recomputed
    assert main(["guidance-bench", "mnist", "--out", str(tmp_path / "no" / "g")]) == 2
    assert main(["guidance-bench", "mnist", "--per-class", "1"]) == 2    # diversity needs 2 samples of a class
