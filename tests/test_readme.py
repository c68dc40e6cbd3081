"""The commands of the README and the docs pages: the set-up commands are the ones CI and users really run,
every documented ``python -m recsys_exp`` command names options, presets, keys, modules and scripts that
exist, and every documented config error is the one the code raises."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
GROUPS = ("env", "algo", "exploration", "model", "tune", "offline", "serve", "logger")
ERROR_PREFIX = "recsys_exp: config error: "


def _ci_command() -> str:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    return next(line for line in lines if line.startswith("python3 -m venv"))


def test_readme_test_command_is_the_ci_command():
    assert _ci_command() in (ROOT / "README.md").read_text()


def test_readme_default_experiment_command_installs_the_same_way():
    install = _ci_command().split(" && OMP_NUM_THREADS")[0]
    assert f"{install} && .venv/bin/python -m recsys_exp" in (ROOT / "README.md").read_text()


def test_every_set_up_command_in_the_docs_installs_as_ci_does():
    """A set-up command quoted on any page is CI's, or CI's install followed by the default experiment."""
    ci = _ci_command()
    allowed = {ci, f"{ci.split(' && OMP_NUM_THREADS')[0]} && .venv/bin/python -m recsys_exp"}
    quoted = [(page.name, line.strip()) for page in PAGES for line in page.read_text().splitlines()
              if line.strip().startswith("python3 -m venv")]
    assert quoted and all(line in allowed for _, line in quoted), [q for q in quoted if q[1] not in allowed]


# --- documented commands ------------------------------------------------------------------------


def _commands(text: str) -> list[str]:
    """The shell commands of a page: each line of its bash blocks and each ``$ `` line of its text blocks,
    backslash continuations joined and comments dropped."""
    commands, block = [], None
    lines = iter(text.splitlines())
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("```"):
            block = None if block is not None else stripped[3:].strip()
            continue
        if block not in ("bash", "text", ""):
            continue
        if block in ("text", "") and not stripped.startswith("$ "):
            continue
        command = stripped.removeprefix("$ ")
        while command.endswith("\\"):
            command = command[:-1] + " " + next(lines).strip()
        command = re.sub(r"(^|\s)#.*$", "", command).strip()  # a comment after the command
        if command:
            commands.append(command)
    return commands


def _documented_commands() -> list[tuple[str, list[str]]]:
    """``(page, tokens after "python -m recsys_exp")`` of every documented CLI run, and the module runs."""
    found = []
    for page in PAGES:
        for command in _commands(page.read_text()):
            if re.search(r"python (-m recsys_exp|benchmarks/)", command):
                found.append((page.name, shlex.split(command)))
    return found


def _schema_has(key: str) -> bool:
    """Whether the dotted ``key`` is a key of the typed schema (keys below a free-form mapping count)."""
    from recsys_exp.config import schema

    cls = schema.Config
    for part in key.split("."):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            return False
        f = fields[part]
        if part in schema.GROUPS and cls is schema.Config:
            cls = schema.GROUPS[part]
            continue
        nested = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if not dataclasses.is_dataclass(nested):
            return True  # a leaf, or a free-form mapping (algo.training, env.params, tune.search_space, ...)
        cls = type(nested)
    return True


def _problems(tokens: list[str]) -> list[str]:
    """What in one documented command does not exist: options, presets, schema keys, modules, scripts."""
    problems = []
    python = next(i for i, t in enumerate(tokens) if t == "python" or t.endswith("/python"))
    if tokens[python + 1].startswith("benchmarks/"):
        script = tokens[python + 1]
        return [] if (ROOT / script).is_file() else [f"no script {script}"]
    at = tokens.index("recsys_exp") if "recsys_exp" in tokens else None
    module = next((t for t in tokens if t.startswith("recsys_exp.")), None)
    if at is None:
        return [] if module and importlib.util.find_spec(module) else [f"no module {module}"]
    args = tokens[at + 1:]
    search = [ROOT / "conf"]
    for arg in args:
        if arg.startswith("hydra.searchpath="):
            search += [ROOT / p.removeprefix("file://").strip("/") if not p.startswith("file:///") else
                       Path(p.removeprefix("file://")) for p in arg.split("=", 1)[1].strip("[]").split(",")]
    user_conf = any(not p.is_dir() for p in search)  # a user's own config dir (a placeholder path)
    skip_next = False
    for arg in args:
        if skip_next or arg in ("-m", "--multirun"):
            skip_next = False
            continue
        if arg in ("--cfg", "--info"):
            skip_next = True
            continue
        if "=" not in arg or arg.startswith(("~", "hydra.")):
            continue
        key, value = arg.split("=", 1)
        if key == "+experiment":
            key = "experiment"
        elif key.startswith("+"):
            continue  # adds a key that is not in the schema: validation decides
        if key in (*GROUPS, "experiment"):
            if "<" in value or user_conf:
                continue
            for option in value.split(","):
                if not any((d / key / f"{option}.yaml").is_file() for d in search):
                    problems.append(f"{arg}: no option {key}/{option}.yaml")
        elif not _schema_has(key):
            problems.append(f"{arg}: {key} is not a key of the schema")
    return problems


def test_documented_commands_name_what_exists():
    """Every option, preset, schema key, module and script a documented command names exists, so a
    renamed option or key breaks this test, not a reader's first run."""
    commands = _documented_commands()
    assert len(commands) > 50  # the parser found the pages' commands
    problems = [f"{page}: {' '.join(tokens)}: {p}" for page, tokens in commands for p in _problems(tokens)]
    assert not problems, "\n".join(problems)


def _documented_errors() -> list[tuple[str, list[str], str]]:
    """``(page, overrides, message)`` of each ``$ python -m recsys_exp ...`` line followed by its config error."""
    found = []
    for page in PAGES:
        lines = [line.strip() for line in page.read_text().splitlines()]
        for command, answer in zip(lines, lines[1:]):
            if command.startswith("$ python -m recsys_exp ") and answer.startswith(ERROR_PREFIX):
                found.append((page.name, shlex.split(command)[4:], answer.removeprefix(ERROR_PREFIX)))
    return found


DOCUMENTED_ERRORS = _documented_errors()


@pytest.mark.parametrize(("page", "overrides", "message"), DOCUMENTED_ERRORS,
                         ids=[f"{p}: {' '.join(o)}" for p, o, _ in DOCUMENTED_ERRORS])
def test_documented_config_errors_are_the_ones_raised(page, overrides, message, tmp_path, monkeypatch):
    """The error a page shows for a command is the one line the code raises for it (what the CLI prints
    after its prefix), before anything is written or Ray starts: from composition and validation, or
    from building the RLlib config (its keyword check)."""
    import ray

    import recsys_exp

    def tripwire(*args, **kwargs):
        raise AssertionError(f"{page}: {' '.join(overrides)} ran instead of failing with {message!r}")

    monkeypatch.setattr(ray, "init", tripwire)
    with pytest.raises(recsys_exp.ConfigError) as e:
        recsys_exp.run(overrides, run_dir=tmp_path / "run")
    assert str(e.value) == message
    assert not (tmp_path / "run").exists()


def test_the_documented_errors_were_found():
    pages = {page for page, _, _ in DOCUMENTED_ERRORS}
    assert len(DOCUMENTED_ERRORS) >= 7 and {"configuration.md", "sweeps.md"} <= pages, DOCUMENTED_ERRORS
