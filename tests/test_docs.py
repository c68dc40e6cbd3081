"""The documentation site: ``mkdocs build --strict`` passes (no broken link or anchor, no page left out of
the nav), the README's links into the repository and the site resolve, and the generated configuration
reference covers every key of the schema and every option in ``conf/``."""

from __future__ import annotations

import dataclasses
import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built with ``mkdocs build --strict`` into a temporary dir (fails the tests if it fails)."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-f",
                           str(ROOT / "mkdocs.yml"), "-d", str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def _ids(page: Path) -> set[str]:
    return set(re.findall(r'\sid="([^"]+)"', page.read_text()))


def test_every_page_is_built(site):
    pages = sorted(p.relative_to(ROOT / "docs") for p in (ROOT / "docs").rglob("*.md"))
    assert len(pages) >= 12
    for page in pages:
        built = site / ("index.html" if page.name == "index.md" else page.with_suffix("") / "index.html")
        assert built.is_file(), f"docs/{page} was not built"


def test_readme_links_resolve(site):
    """Each relative link of the README names a file of the repository; a link into docs/ with an
    anchor names a heading the built page has (GitHub renders the README, MkDocs the pages)."""
    text = (ROOT / "README.md").read_text()
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # links are not followed inside code blocks
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [link for link in links if not re.match(r"[a-z]+:", link)]
    assert any(link.startswith("docs/") for link in local)
    headings = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
                for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}
    for link in local:
        path, _, anchor = link.partition("#")
        if not path:  # an anchor of the README itself: a heading's GitHub slug
            assert anchor in headings, f"README links to #{anchor}: no such heading (has {sorted(headings)})"
            continue
        assert (ROOT / path).exists(), f"README links to {path}, which does not exist"
        if anchor:
            assert path.startswith("docs/") and path.endswith(".md"), link
            page = Path(path).relative_to("docs")
            built = site / ("index.html" if page.name == "index.md" else page.with_suffix("") / "index.html")
            assert anchor in _ids(built), f"README links to {link}: no such heading on that page"


def _text(page: Path) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))


def test_the_configuration_reference_covers_the_schema_and_conf(site):
    """Every key of every group and of the top level (from the dataclasses themselves), every option file of
    every group and every preset (from conf/) is on the generated page; so is each algo option's plugin."""
    from recsys_exp.config import schema

    page = site / "config-reference" / "index.html"
    text, ids = _text(page), _ids(page)

    def keys(cls, prefix):
        for f in dataclasses.fields(cls):
            nested = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
            if dataclasses.is_dataclass(nested):
                yield from keys(type(nested), f"{prefix}{f.name}.")
            else:
                yield f"{prefix}{f.name}"

    expected = [k for group, cls in schema.GROUPS.items() for k in keys(cls, f"{group}.")]
    expected += [k for k in keys(schema.Config, "") if k not in schema.GROUPS]
    assert len(expected) > 80
    missing = [k for k in expected if f"\n{k}\n" not in text]  # each key is a table cell of its own
    assert not missing, missing
    for group in (*schema.GROUPS, "experiment"):
        options = sorted((ROOT / "conf" / group).glob("*.yaml"))
        assert options
        for option in options:
            assert f"conf/{group}/{option.name}" in text, f"conf/{group}/{option.name} is not in the reference"
            assert any(i.startswith(f"{group}{option.stem}") for i in ids), f"no heading for {group}={option.stem}"
    for option in sorted((ROOT / "conf" / "algo").glob("*.yaml")):
        target = re.search(r"^_target_:\s*(\S+)", option.read_text(), flags=re.M)
        if target:
            assert f"Plugin {target.group(1)}" in text, option.name
