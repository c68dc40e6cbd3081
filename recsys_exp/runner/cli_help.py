"""``python -m recsys_exp --help``: generated from ``conf/`` and the registered modes, so it cannot
go stale. Config groups with each option's first comment sentence (its YAML's leading comment),
the keys of ``conf/config.yaml`` with their inline comments, the modes with their handlers' first
docstring sentence, the flags, and the five most common commands. Imports neither Ray nor torch.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import yaml

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
NOT_GROUPS = ("hydra",)  # Hydra's own config groups (conf/hydra/*), not the app's
PRESETS = "experiment"  # the presets group, used as +experiment=NAME
FIRST = ("algo", "env")  # listed first; then the primary config's defaults order, then the rest
WIDTH = 120  # characters per line
_SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)(?<!\bet al)(?<!\bvs)\.(?=\s|$)")
_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>\w+):(?P<value>[^#]*?)\s*(?:#\s*(?P<comment>.*))?$")

FLAGS = (
    ("-m, --multirun", "one job per combination of comma-separated values, e.g. algo=random,slateq seed=0,1"),
    ("-v, --verbose", "Ray/RLlib/Tune/W&B output on the terminal (default: <run dir>/recsys_exp.log only)"),
    ("--cfg job", "print the composed config and exit (--resolve to resolve interpolations)"),
    ("-h, --help", "this help"),
    ("--hydra-help", "Hydra's own help (its flags, shell completion)"),
)


def config_groups(conf_dir: Path = CONF_DIR) -> dict[str, list[str]]:
    """``{group: [option, ...]}`` of the config dirs under ``conf_dir`` (sorted; Hydra's own excluded)."""
    return {d.name: sorted(p.stem for p in d.glob("*.yaml"))
            for d in sorted(conf_dir.iterdir()) if d.is_dir() and d.name not in NOT_GROUPS and any(d.glob("*.yaml"))}


def describe(path: Path) -> str:
    """The first sentence of a YAML file's leading comment block (``# @package`` lines and indented
    command examples skipped), without a trailing ``:`` or ``, e.g.``."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#") or line.startswith("#   "):  # the end of the comment, or an example
            break
        text = line[1:].strip()
        if not text.startswith("@package"):
            lines.append(text)
    text = " ".join(lines).strip()
    match = _SENTENCE_END.search(text)
    sentence = text[:match.start()] if match else text
    return re.sub(r"(,? e\.g\.|:)$", "", sentence.strip()).strip()


def defaults(conf_dir: Path = CONF_DIR) -> dict[str, str]:
    """``{group: default option}`` from the primary config's defaults list."""
    config = yaml.safe_load((conf_dir / "config.yaml").read_text())
    out = {}
    for entry in config.get("defaults", []):
        if isinstance(entry, dict):
            (group, option), = entry.items()
            out[str(group)] = str(option)
    return out


def top_keys(conf_dir: Path = CONF_DIR) -> list[tuple[str, str, str]]:
    """``(dotted key, default, comment)`` of the primary config's keys (the hydra block excluded)."""
    out, parents = [], []
    for line in (conf_dir / "config.yaml").read_text().splitlines():
        m = _KEY_LINE.match(line)
        if not m or line.lstrip().startswith("-"):
            continue
        depth = len(m["indent"]) // 2
        if depth == 0 and m["key"] in ("defaults", "hydra"):
            parents = [None]  # skip the block
            continue
        parents = parents[:depth]
        if parents and parents[0] is None:
            continue
        value = m["value"].strip()
        if value:
            out.append((".".join([*parents, m["key"]]), value, (m["comment"] or "").strip()))
        else:
            parents.append(m["key"])
    return out


def modes() -> list[tuple[str, str]]:
    """``(mode, first docstring sentence)`` of every registered mode handler."""
    from recsys_exp.runner import modes as _builtin  # noqa: F401  (registers the built-in modes)
    from recsys_exp.runner.lifecycle import MODES

    out = []
    for name, mode in MODES.items():
        doc = " ".join((mode.run.__doc__ or "").replace("``", "").split())
        match = _SENTENCE_END.search(doc)
        out.append((name, doc[:match.start()] if match else doc))
    return out


def common_commands(conf_dir: Path = CONF_DIR) -> list[tuple[str, str]]:
    """The five most common commands, with what each does (the default run's from ``conf/``)."""
    d = defaults(conf_dir)
    keys = {k: v for k, v, _ in top_keys(conf_dir)}
    steps = keys.get("stop.timesteps", "?")
    steps = f"{int(steps):,}" if steps.isdigit() else steps
    return [
        ("python -m recsys_exp", f"the default run: {d.get('algo')} on {d.get('env')}, {steps} env steps, "
                                 "then a greedy evaluation next to random slates"),
        ("python -m recsys_exp algo=lin_ucb env=long_term_satisfaction stop.timesteps=20000",
         "another algorithm, env and budget"),
        ("python -m recsys_exp -m algo=random,lin_ucb,slateq seed=0,1,2",
         "compare algorithms over seeds, then: python -m recsys_exp.report <multirun dir>"),
        ("python -m recsys_exp mode=evaluate restore=<run dir>", "greedy episodes of a trained run's checkpoint"),
        ("python -m recsys_exp mode=serve restore=<run dir> serve=http", "serve it over HTTP with Ray Serve"),
    ]


def _table(rows: list[tuple[str, str]], indent: int = 2) -> list[str]:
    """Two columns, one line per row: the second shortened at a word to fit :data:`WIDTH`."""
    width = max((len(a) for a, _ in rows), default=0)
    room = max(30, WIDTH - indent - width - 2)
    return [f"{' ' * indent}{a:<{width}}  {textwrap.shorten(b, room, placeholder=' ...')}".rstrip()
            for a, b in rows]


def help_text(conf_dir: Path = CONF_DIR) -> str:
    """The whole ``--help`` text."""
    groups, chosen = config_groups(conf_dir), defaults(conf_dir)
    lines = ["usage: python -m recsys_exp [-v] [-m] [group=option ...] [key=value ...]   (or: recsys-exp ...)", "",
             "Reinforcement-learning recommender experiments from composable configs. Choose one option per",
             "group with group=option (presets: +experiment=NAME), change any key with key=value.", "",
             "config groups (conf/<group>/<option>.yaml; * = default):"]
    order = [g for g in FIRST if g in groups]
    order += [g for g in chosen if g in groups and g not in order]
    order += [g for g in groups if g not in order]
    for group in order:
        usage = f"+{group}=NAME, presets" if group == PRESETS else f"{group}=..."
        lines.append(f"  {group} ({usage})")
        rows = [(f"{'*' if chosen.get(group) == opt else ' '} {opt}", describe(conf_dir / group / f"{opt}.yaml"))
                for opt in groups[group]]
        lines += _table(rows, indent=4)
    lines += ["", "keys of conf/config.yaml (key=value):"]
    lines += _table([(f"{key}={value}", comment) for key, value, comment in top_keys(conf_dir)])
    default_mode = dict((k, v) for k, v, _ in top_keys(conf_dir)).get("mode")
    lines += ["", "modes (mode=...; * = default):"]
    lines += _table([(f"{'*' if name == default_mode else ' '} {name}", doc) for name, doc in modes()])
    lines += ["", "flags:"]
    lines += _table(list(FLAGS))
    lines += ["", "common commands:"]
    for cmd, what in common_commands(conf_dir):
        lines += [f"  {cmd}", f"      {what}"]
    return "\n".join(lines)
