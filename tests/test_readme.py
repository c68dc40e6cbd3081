"""The README's set-up commands are the ones CI and users really run."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _ci_command() -> str:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    return next(line for line in lines if line.startswith("python3 -m venv"))


def test_readme_test_command_is_the_ci_command():
    assert _ci_command() in (ROOT / "README.md").read_text()


def test_readme_default_experiment_command_installs_the_same_way():
    install = _ci_command().split(" && OMP_NUM_THREADS")[0]
    assert f"{install} && .venv/bin/python -m recsys_exp" in (ROOT / "README.md").read_text()
