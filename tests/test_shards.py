"""Sharded sampling (diffsolve.shards, diffsolve metrics): serial and Ray runs write the same
bytes, a killed run resumes with exactly the missing shards, metrics streamed over the shards
equal those of the samples held at once, a resumed run with other settings is refused."""

from __future__ import annotations

import json
import os

import pytest
import torch

from diffsolve import shards as S
from diffsolve.cli import main
from diffsolve.shards import RunMismatch, SampleRun, read_shards, run_shards

DIGITS = SampleRun(model="digits", solver="dpm++2m", nfe=6, num=25, shard_size=10, labels=(3, 1, 4))


def _files(d) -> dict[str, bytes]:
    """Every file under d (relative path -> bytes)."""
    out = {}
    for root, _, names in os.walk(d):
        for n in names:
            p = os.path.join(root, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, d)] = f.read()
    return out


def test_plan_names_and_labels_do_not_depend_on_sharding():
    run = SampleRun(model="digits", seed=995, num=12, shard_size=5, labels=(7, 2))
    assert [s.name for s in run.shards()] == ["samples-000995-000999", "samples-001000-001004",
                                              "samples-001005-001006"]
    other = SampleRun(model="digits", seed=995, num=12, shard_size=4, labels=(7, 2))
    by_seed = lambda r: {int(s): int(l) for sh in r.shards() for s, l in zip(sh.seeds, r.labels_for(sh.seeds))}  # noqa: E731
    assert by_seed(run) == by_seed(other) and by_seed(run)[996] == 2
    assert SampleRun(model="x", seed=10**7 - 3, num=5, shard_size=5).shards()[0].name == "samples-09999997-10000001"


def test_shard_bytes_do_not_depend_on_the_run_around_them(tmp_path):
    """One run written whole, another interrupted after one shard (an exception from on_shard, as
    a kill between shards) plus an orphaned temporary, then resumed: the resumed run writes
    exactly the missing shards, removes the temporary, and ends with the same bytes."""
    whole = run_shards(DIGITS, tmp_path / "whole")
    assert whole.complete and whole.written == [s.name + ".safetensors" for s in DIGITS.shards()]

    d = tmp_path / "killed"

    def kill(name, done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_shards(DIGITS, d, on_shard=kill)
    orphan = d / ".tmp-abcd1234.safetensors"
    orphan.write_bytes(b"half a shard")
    assert sorted(os.listdir(d)) == [".tmp-abcd1234.safetensors", "run.json", "samples-000000-000009.safetensors"]
    res = run_shards(DIGITS, d)
    assert res.written == ["samples-000010-000019.safetensors", "samples-000020-000024.safetensors"]
    assert res.skipped == ["samples-000000-000009.safetensors"] and res.removed == [str(orphan)]
    assert _files(d) == _files(tmp_path / "whole")

    # a shard lost later (deleted): only that one is drawn again, byte for byte
    os.unlink(d / "samples-000010-000019.safetensors")
    part = run_shards(DIGITS, d, max_shards=0)
    assert part.written == [] and not part.complete
    assert run_shards(DIGITS, d).written == ["samples-000010-000019.safetensors"]
    assert _files(d) == _files(tmp_path / "whole")
    got = list(read_shards(d))
    assert [int(s) for sh in got for s in sh.seeds] == list(range(25))
    assert [int(v) for sh in got for v in sh.labels] == [(3, 1, 4)[k % 3] for k in range(25)]


def test_ray_and_serial_write_identical_shards(tmp_path):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'diffsolve[ray]')")
    run_shards(DIGITS, tmp_path / "serial")
    try:
        res = run_shards(DIGITS, tmp_path / "ray", ray="local", ray_cpus=2)
    except Exception as e:  # noqa: BLE001 - a sandbox where Ray cannot start its processes
        if ray.is_initialized():
            ray.shutdown()
        pytest.skip(f"Ray could not start a local cluster here: {type(e).__name__}: {e}")
    assert sorted(res.written) == sorted(s.name + ".safetensors" for s in DIGITS.shards())
    assert _files(tmp_path / "ray") == _files(tmp_path / "serial")


def test_png_shards_are_atomic_folders_and_read_back(tmp_path):
    run = SampleRun(model="digits", nfe=4, num=7, shard_size=4, format="png", labels=(5,))
    run_shards(run, tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["run.json", "samples-000000-000003", "samples-000004-000006"]
    assert sorted(os.listdir(tmp_path / "samples-000004-000006")) == ["000004.png", "000005.png", "000006.png",
                                                                    "shard.json"]
    x, _ = S.sample_shard(run, run.shards()[1])
    back = list(read_shards(tmp_path))[1]
    assert torch.equal(back.samples, ((x.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1)
    assert back.labels.tolist() == [5, 5, 5]
    (tmp_path / ".tmp-zzzzzzzz").mkdir()  # a folder a killed run was building
    assert run_shards(run, tmp_path).removed == [str(tmp_path / ".tmp-zzzzzzzz")]
    with pytest.raises(ValueError, match="format 'png'.*not images"):
        run_shards(SampleRun(model="gmm-2d", num=4, format="png"), tmp_path / "g")


def test_a_resumed_run_with_other_settings_is_refused(tmp_path, capsys):
    run_shards(DIGITS, tmp_path, max_shards=1)
    for change, field in ((dict(solver="unipc"), "solver"), (dict(shard_size=5), "shard_size"),
                          (dict(labels=(3, 1)), "labels"), (dict(nfe=8), "nfe")):
        with pytest.raises(RunMismatch, match=f"holds a run with {field}=") as e:
            run_shards(SampleRun(**{**DIGITS.to_dict(), **change, "labels": change.get("labels", DIGITS.labels)}),
                       tmp_path)
        assert e.value.field == field
    assert sorted(os.listdir(tmp_path)) == ["run.json", "samples-000000-000009.safetensors"]  # nothing drawn
    rc = main(["sample", "--model", "digits", "--solver", "dpm++2m", "--nfe", "6", "--num", "25", "--shard-size", "5",
               "--label", "3", "1",
               "4", "--out-dir", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith(f"diffsolve sample: error: argument --out-dir: {tmp_path} holds a run with "
                                      "--shard-size 10, this command asks 5") and "\n" not in err, err


def test_metrics_over_shards_equal_the_in_memory_numbers_mnist(tmp_path, monkeypatch, capsys):
    """The MNIST metrics streamed over shards (FD from merged moments, class accuracy, k-NN) equal
    image_quality on the same images held at once.  The sampler is replaced by real MNIST images
    (the shipped MNIST model costs seconds a sample on one thread); the path from shard files to
    numbers is the one a real run takes."""
    from diffsolve import data
    from diffsolve.metrics import image_quality

    x, y = data.mnist("valid")
    n = 45
    monkeypatch.setattr(S, "sample_shard", lambda run, sh: (x[sh.start:sh.stop].float(), run.labels_for(sh.seeds)))
    labels = tuple(int(v) for v in y[:n])
    run_shards(SampleRun(model="mnist", num=n, shard_size=20, labels=labels), tmp_path)
    knn = data.mnist_missing() is None
    assert main(["metrics", str(tmp_path), "--json"] + ([] if knn else ["--no-knn"])) == 0
    got = json.loads(capsys.readouterr().out)
    ref = image_quality(x[:n], y[:n], knn=knn)
    assert got.pop("kind") == "mnist"
    assert got == ref  # bit for bit: JSON keeps a float64's every digit
    assert main(["metrics", str(tmp_path)] + ([] if knn else ["--no-knn"])) == 0
    out = capsys.readouterr().out
    assert "class accuracy" in out and "Frechet distance" in out


def test_metrics_over_shards_equal_the_in_memory_numbers_exact(tmp_path, capsys):
    """gmm-2d: diffsolve metrics over 3 shards equals the in-memory numbers of one
    ``diffsolve sample`` batch of the same seeds (these distances gather the samples: see
    diffsolve.metrics.streaming)."""
    from diffsolve.metrics import compare_to_exact
    from diffsolve.models import load_model
    from diffsolve.noise import NoiseSource
    from diffsolve.sample import sample

    run = SampleRun(model="gmm-2d", nfe=8, num=60, shard_size=25)
    run_shards(run, tmp_path)
    assert main(["metrics", str(tmp_path), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    gmm, seeds = load_model("gmm-2d"), list(range(60))
    x = sample(gmm, NoiseSource.initial(seeds, gmm.shape), solver="dpm++2m", nfe=8, schedule="karras",
               seeds=seeds).samples.float()
    ref = compare_to_exact(gmm, x.to(torch.float64))
    assert got.pop("kind") == "exact"
    for k, v in ref.items():
        assert got[k] == v, k  # the same samples (per-sample seeds; this denoiser is batch-invariant)


@pytest.mark.parametrize("argv, message", [
    (["--shard-size", "10"], "argument --shard-size: only with --out-dir DIR"),
    (["--format", "png"], "argument --format: only with --out-dir DIR"),
    (["--out-dir", "{d}", "--out", "x.png"], "argument --out: not with --out-dir"),
    (["--out-dir", "{d}", "--save-tensor", "x.pt"], "argument --save-tensor: not with --out-dir"),
    (["--out-dir", "{d}", "--shard-size", "0"], "argument --shard-size: 0 is not a positive integer"),
    (["--out-dir", "{d}", "--ray", "no-port"], "argument --ray: ray address 'no-port' is not HOST:PORT"),
    (["--out-dir", "{d}", "--ray-cpus", "2"], "argument --ray-cpus: only with --ray local"),
    (["--out-dir", "{d}", "--format", "png"], "format 'png': model 'gmm-2d' draws samples of shape (2,)"),
    (["--out-dir", "{d}/no/such/parent"], "argument --out-dir:"),
])
def test_bad_flags_are_one_line_errors(tmp_path, capsys, argv, message):
    argv = [a.replace("{d}", str(tmp_path / "run")) for a in argv]
    rc = main(["sample", "--model", "gmm-2d", "--num", "4", "--nfe", "4", "--quiet"] + argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("diffsolve sample: error: ") and message in err and "\n" not in err, err


def test_metrics_of_an_incomplete_or_foreign_directory_is_a_one_line_error(tmp_path, capsys):
    run_shards(SampleRun(model="gmm-2d", nfe=4, num=10, shard_size=5), tmp_path / "r", max_shards=1)
    for d, message in ((tmp_path / "r", "1 of 2 shards missing (first: samples-000005-000009.safetensors)"),
                       (tmp_path, "has no run.json")):
        assert main(["metrics", str(d)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("diffsolve metrics: error: ") and message in err and "\n" not in err, err


def test_streamed_mnist_numbers_do_not_depend_on_the_batch_sizes():
    """Batches of 300 cross image_quality's 1,000-image CNN chunks: the streamed numbers still
    equal the in-memory ones bit for bit (the CNN is fed the same chunks)."""
    from diffsolve.data import mnist
    from diffsolve.metrics import image_quality
    from diffsolve.metrics.streaming import stream_image_quality

    x, y = mnist("valid")
    n = 1100
    got = stream_image_quality(((x[i:min(i + 300, n)], y[i:min(i + 300, n)]) for i in range(0, n, 300)), knn=False)
    ref = image_quality(x[:n], y[:n], knn=False)
    assert got == ref
