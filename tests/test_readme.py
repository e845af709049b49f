"""The README's set-up commands are the ones CI runs, and its examples run."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _readme_commands():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(python3 -m venv[^\n]*)\n```", text)


def test_ci_runs_the_readme_test_command():
    cmds = _readme_commands()
    assert len(cmds) == 2, cmds
    ci = (ROOT / ".ci" / "run").read_text()
    assert cmds[1] in ci.splitlines(), "'.ci/run' must run the README's test command verbatim"
    assert "pytest" in cmds[1] and "diffsolve sample" in cmds[0]


def test_readme_main_command_parses_and_samples_mnist():
    from diffsolve.cli import build_parser

    argv = _readme_commands()[0].split("&& diffsolve ")[-1].split()
    args = build_parser().parse_args(argv)
    assert args.command == "sample" and args.model == "mnist" and args.label and args.metrics


def test_readme_python_example_runs():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## In Python\n\n```python\n(.*?)```", text, re.S).group(1)
    ns: dict = {}
    exec(compile(block, "README", "exec"), ns)
    assert ns["res"].nfe == 8
