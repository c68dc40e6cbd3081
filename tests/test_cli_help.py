"""``recsys-exp --help`` (in process): every config group in ``conf/`` with every option (the file
system is the oracle), the modes the config accepts, and five common commands that compose; and
Hydra's own help behind ``--hydra-help``."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def cli_output(monkeypatch, capsys, *args: str) -> str:
    """What ``recsys-exp *args`` prints (our own flags only: this does not start Hydra)."""
    from recsys_exp.__main__ import main

    monkeypatch.setattr(sys, "argv", ["recsys-exp", *args])
    assert main() is None
    return capsys.readouterr().out


def group_sections(out: str) -> dict[str, list[str]]:
    """``{group: its option lines}`` of the help's config groups part."""
    part = out.split("config groups")[1].split("\n\n")[0]
    sections: dict[str, list[str]] = {}
    for line in part.splitlines()[1:]:
        if re.match(r"^  \S", line):
            sections[line.split()[0]] = []
        else:
            sections[list(sections)[-1]].append(line)
    return sections


def test_help_lists_every_group_option_mode_and_common_commands(monkeypatch, capsys):
    out = cli_output(monkeypatch, capsys, "--help")
    assert out == cli_output(monkeypatch, capsys, "-h")
    groups = {d.name: sorted(p.stem for p in d.glob("*.yaml")) for d in CONF.iterdir()
              if d.is_dir() and d.name != "hydra" and any(d.glob("*.yaml"))}
    sections = group_sections(out)
    assert sorted(sections) == sorted(groups)
    defaults = {k: v for entry in yaml.safe_load((CONF / "config.yaml").read_text())["defaults"]
                if isinstance(entry, dict) for k, v in entry.items()}
    for group, options in groups.items():
        listed = {}
        for line in sections[group]:  # "    * option  one line about it"
            m = re.match(r"^    ([* ]) (\S+)\s{2,}(\S.*)$", line)
            assert m, (group, line)
            listed[m[2]] = (m[1] == "*", m[3])
        assert sorted(listed) == options, group
        assert [opt for opt, (star, _) in listed.items() if star] == ([defaults[group]] if group in defaults else [])
        # the description is the YAML's own leading comment
        for opt, (_, about) in listed.items():
            first = next(ln for ln in (CONF / group / f"{opt}.yaml").read_text().splitlines()
                         if ln.startswith("#") and "@package" not in ln)
            assert about.split()[0] in first, (group, opt, about)

    from recsys_exp.config.validate import MODES

    modes = out.split("modes (mode=...; * = default):\n")[1].split("\n\n")[0].splitlines()
    assert sorted(line[4:].split()[0] for line in modes) == sorted(MODES)

    commands = [line.strip() for line in out.split("common commands:\n")[1].splitlines()
                if line.startswith("  python -m recsys_exp")]
    assert len(commands) == 5
    import recsys_exp

    for command in commands:
        args = [a for a in shlex.split(command.replace("<run dir>", "RUN_DIR"))[3:] if a != "-m"]
        if "restore=RUN_DIR" in args:  # the next commands a training run prints (tests/test_runner.py)
            assert args[0].split("=")[1] in MODES
            continue
        recsys_exp.compose([a.split(",")[0] for a in args])  # a -m sweep: its first job


def test_hydras_own_help_stays_reachable():
    # A process of its own: Hydra resets logging, and a log handler another test left behind (absl's)
    # would close the stream it was created with, pytest's capture.
    proc = subprocess.run([sys.executable, "-m", "recsys_exp", "--hydra-help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "Hydra (1.3" in proc.stdout, proc.stderr
