"""The configuration reference page, generated from the typed schema and ``conf/`` when the site is built.

An MkDocs hook (``hooks:`` in mkdocs.yml): :func:`on_page_markdown` replaces the marker line of
``docs/config-reference.md`` with :func:`render`'s Markdown, so the reference cannot drift from the code:

* every key of every group and of the top level, with its type and default from the dataclasses of
  ``recsys_exp/config/schema.py`` and its description from the comment on the field's line there
  (for top-level keys without one, the comment on the key's line in ``conf/config.yaml``);
* every option of every group (one YAML file in ``conf/<group>/``) with its header comment and its file,
  and for ``algo`` options the plugin's explorations and its own typed ``algo.training`` keys;
* the presets of ``conf/experiment/``.

``python docs/hooks/config_reference.py`` prints the same Markdown.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import io
import re
import tokenize
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
SCHEMA = ROOT / "recsys_exp" / "config" / "schema.py"
PAGE = "config-reference.md"
MARKER = "<!-- config-reference: generated at build time by docs/hooks/config_reference.py -->"


def on_page_markdown(markdown: str, page, config, files) -> str:
    """MkDocs hook: the reference page with its marker replaced by the generated reference."""
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise ValueError(f"docs/{PAGE}: the marker line {MARKER!r} is missing")
    return markdown.replace(MARKER, render())


def render() -> str:
    """The whole generated reference as Markdown."""
    from recsys_exp.config import schema

    comments = _field_comments(SCHEMA)
    config_yaml = CONF / "config.yaml"
    top_comments = _yaml_line_comments(config_yaml)
    defaults = _group_defaults(config_yaml)
    out = [_overview(schema.GROUPS, defaults), ""]
    for group, cls in schema.GROUPS.items():
        out += [f"## {group}", "", _doc(cls), ""]
        out += _keys_table(cls, group, comments, {}), ""
        out += _options(group, defaults.get(group))
    out += _experiments()
    out += ["## Top-level keys", "",
            "Keys of the whole experiment that belong to no group; set them directly (`seed=1`, "
            "`stop.timesteps=20000`).", ""]
    groups = set(schema.GROUPS)
    out += _keys_table(schema.Config, "", comments, top_comments, skip=groups), ""
    return "\n".join(out).rstrip() + "\n"


# --- the schema: field comments, types, defaults ------------------------------------------------


def _field_comments(path: Path) -> dict[tuple[str, str], str]:
    """``(class name, field name) -> comment`` for every annotated dataclass field with a comment on its line."""
    source = path.read_text()
    by_line = {tok.start[0]: tok.string.lstrip("#").strip()
               for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    found = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    if item.lineno in by_line:
                        found[(node.name, item.target.id)] = by_line[item.lineno]
    return found


def _yaml_line_comments(path: Path) -> dict[str, str]:
    """``dotted key -> comment`` of the keys of a YAML file that carry a comment on their own line
    (block-style mappings only, as in ``conf/config.yaml``)."""
    stack: list[tuple[int, str]] = []
    found = {}
    for line in path.read_text().splitlines():
        text = line.split("#", 1)[0].rstrip()
        if not text.strip() or text.lstrip().startswith("-") or ":" not in text:
            continue
        indent = len(text) - len(text.lstrip())
        key = text.strip().split(":", 1)[0]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        if "#" in line:
            found[".".join(k for _, k in stack)] = line.split("#", 1)[1].strip()
    return found


def _group_defaults(config_yaml: Path) -> dict[str, str]:
    """The option of each group that ``conf/config.yaml`` chooses by default."""
    chosen = {}
    for entry in yaml.safe_load(config_yaml.read_text()).get("defaults", []):
        if isinstance(entry, dict):
            chosen.update({str(k): str(v) for k, v in entry.items()})
    return chosen


def _doc(obj: Any) -> str:
    """An object's docstring as one Markdown paragraph (reST ````code```` and ``:role:`x``` as `x`)."""
    text = " ".join((obj.__doc__ or "").split())
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"``\1``", text)
    return _escape(text.replace("``", "`"))


def _type_name(annotation: Any) -> str:
    """A field's annotation the way a config user reads it: ``Optional[int]`` -> ``int | null``."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    text = text.replace("typing.", "")
    if text.startswith("Optional[") and text.endswith("]"):
        return f"{_type_name(text[len('Optional['):-1])} | null"
    if text.endswith(" | None"):
        return f"{_type_name(text[:-len(' | None')])} | null"
    if text.startswith(("Dict[", "dict")):
        return "mapping"
    if text.startswith(("List[", "list[")):
        return "list[" + _type_name(text[5:-1]) + "]"
    return text


def _value(value: Any) -> str:
    """A default as it would be written in YAML (one line)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def _default(f: dataclasses.Field) -> str:
    """A field's default, or what stands in for it when the schema has none."""
    from omegaconf import MISSING

    if f.default is not dataclasses.MISSING:
        return "(set by the option)" if f.default == MISSING else f"`{_value(f.default)}`"
    if f.default_factory is not dataclasses.MISSING:
        return f"`{_value(f.default_factory())}`"
    return "(required)"


def _rows(cls: type, prefix: str, comments: dict, fallback: dict, skip: set[str]) -> list[str]:
    """Table rows of ``cls``'s fields, nested dataclasses flattened to dotted keys."""
    rows = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        key = f"{prefix}{f.name}"
        nested = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(nested):
            rows += _rows(type(nested), f"{key}.", comments, fallback, set())
            continue
        text = comments.get((cls.__name__, f.name)) or fallback.get(key, "")
        text = _escape(text).replace("|", "\\|")
        rows.append(f"| `{key}` | {_type_name(f.type).replace('|', chr(92) + '|')} | {_default(f)} | {text} |")
    return rows


def _keys_table(cls: type, group: str, comments: dict, fallback: dict, skip: set[str] = frozenset()) -> str:
    """The keys of a group (or of the top level) as a Markdown table."""
    prefix = f"{group}." if group else ""
    head = ["| key | type | schema default | description |", "|---|---|---|---|"]
    return "\n".join(head + _rows(cls, prefix, comments, fallback, set(skip)))


# --- conf/: options and presets -------------------------------------------------------------------


def _header(path: Path) -> tuple[str, str]:
    """A YAML file's header comment as Markdown (prose as a paragraph, indented example lines as a code
    block; without ``# @package``) and the rest of the file."""
    lines = path.read_text().splitlines()
    blocks: list[tuple[bool, list[str]]] = []  # (is code, lines)
    i = 0
    while i < len(lines) and lines[i].startswith("#"):
        text = lines[i][1:]
        i += 1
        if text.startswith(" @package") or not text.strip():
            continue
        code = text.startswith("   ")
        if not blocks or blocks[-1][0] != code:
            blocks.append((code, []))
        blocks[-1][1].append(text.strip())
    parts = [("```bash\n" + "\n".join(b) + "\n```") if code else _escape(" ".join(b)) for code, b in blocks]
    return "\n\n".join(parts), "\n".join(lines[i:]).strip("\n")


def _escape(text: str) -> str:
    """Prose for Markdown: characters that would start emphasis, links or HTML escaped outside `code`."""
    pieces = text.split("`")
    for k in range(0, len(pieces), 2):  # even pieces are outside backticks
        for ch in "\\*_[]":
            pieces[k] = pieces[k].replace(ch, "\\" + ch)
        pieces[k] = pieces[k].replace("<", "&lt;")  # not escapable with a backslash in Python-Markdown
    return "`".join(pieces)


def _overview(groups: dict[str, type], defaults: dict[str, str]) -> str:
    """One row per group: its options (the default in bold) and what it is."""
    rows = ["| group | options | what it is |", "|---|---|---|"]
    for group, cls in groups.items():
        names = [p.stem for p in sorted((CONF / group).glob("*.yaml"))]
        shown = ", ".join(f"**`{n}`**" if n == defaults.get(group) else f"`{n}`" for n in names)
        rows.append(f"| [`{group}`](#{group}) | {shown} | {_doc(cls)} |")
    presets = ", ".join(f"`{p.stem}`" for p in sorted((CONF / "experiment").glob("*.yaml")))
    rows.append(f"| [`+experiment`](#experiment-presets) | {presets} | presets: several groups and keys at once |")
    return "\n".join(rows)


def _options(group: str, default: str | None) -> list[str]:
    """A subsection per option of ``group``: its description, file and settings."""
    out = [f"### Options of `{group}`", ""]
    for path in sorted((CONF / group).glob("*.yaml")):
        description, body = _header(path)
        mark = " (default)" if path.stem == default else ""
        out += [f"#### `{group}={path.stem}`{mark}", "", description, ""]
        if group == "algo":
            out += [_plugin_summary(path), ""]
        out += _settings(path, body)
    return out


def _experiments() -> list[str]:
    """The presets of ``conf/experiment/``, used as ``+experiment=<name>``."""
    out = ["## experiment (presets)", "",
           "A preset sets several groups and keys at once: `python -m recsys_exp +experiment=<name>` "
           "(with `-m`, the preset's own sweep if it has one).", ""]
    for path in sorted((CONF / "experiment").glob("*.yaml")):
        description, body = _header(path)
        out += [f"#### `+experiment={path.stem}`", "", description, ""]
        out += _settings(path, body)
    return out


def _settings(path: Path, body: str) -> list[str]:
    """The option's file below its header comment, in a collapsed block."""
    rel = path.relative_to(ROOT).as_posix()
    indented = "\n".join(f"    {line}" if line else "" for line in body.splitlines())
    return [f'??? example "{rel}"', "", "    ```yaml", indented, "    ```", ""]


def _target(path: Path) -> str | None:
    """The ``_target_`` of an algo option, following its defaults to another option of the group."""
    data = yaml.safe_load(path.read_text()) or {}
    if data.get("_target_"):
        return data["_target_"]
    for entry in data.get("defaults", []):
        if isinstance(entry, str) and (path.parent / f"{entry}.yaml").is_file():
            return _target(path.parent / f"{entry}.yaml")
    return None


def _plugin_summary(path: Path) -> str:
    """An algo option's plugin: class, explorations (default first) and its own typed training keys."""
    target = _target(path)
    if target is None:
        raise ValueError(f"{path}: no _target_ (an algo option names its plugin class)")
    module, _, name = target.rpartition(".")
    plugin = getattr(importlib.import_module(module), name)
    parts = [f"Plugin `{target}`: {_doc(plugin)}",
             "Explorations: " + ", ".join(f"`{e}`" for e in plugin.explorations) + " (the first is the default)."]
    if plugin.needs.logged_data:
        parts.append("Learns only from logged data (`offline.path`).")
    elif getattr(plugin, "logged_config_class", None):
        parts.append("Can also learn from logged data (`offline.path`).")
    if plugin.Params is not None:
        keys = ", ".join(f"`algo.training.{f.name}` ({_type_name(f.type)}, default {_default(f)})"
                         for f in dataclasses.fields(plugin.Params))
        parts.append(f"Its own keys: {keys}. {_doc(plugin.Params)}")
    parts.append("Other `algo.training` / `algo.env_runners` keys are keywords of its RLlib `AlgorithmConfig`.")
    return " ".join(parts)


if __name__ == "__main__":
    print(render())
