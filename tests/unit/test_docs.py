"""The documentation in docs/ and the README stay true: generated parts current, examples the
shipped files, links that lead somewhere, every field of the report explained, and nothing
pointing outside the repository."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from san import cli
from san.errors import CODES
from san.topology import OPS
from san.topology.reference import render

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def test_the_reference_is_current():
    """If this fails, regenerate: python -m san.topology.reference -o docs/reference.md"""
    assert (DOCS / "reference.md").read_text() == render()


def test_the_reference_has_every_op_and_every_error_code():
    text = (DOCS / "reference.md").read_text()
    assert all(f"### `{op}`" in text for op in OPS)
    assert all(f"| `{code}` |" in text for code in CODES)


@pytest.mark.parametrize("doc,heading,shipped", [
    ("files.md", "## A topology", "two-arrays.yaml"),
    ("files.md", "## A scenario", "scenarios/quickstart.yaml"),
])
def test_the_documented_examples_are_the_shipped_files(doc, heading, shipped):
    text = (DOCS / doc).read_text()
    start = text.index("```yaml\n", text.index(heading)) + len("```yaml\n")
    example = text[start:text.index("```", start)]
    assert (ROOT / "topologies" / shipped).read_text() == example


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, flags=re.M)}


LINKS = [(page, target) for page in PAGES
         for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text())
         if not re.match(r"[a-z]+:", target)]


@pytest.mark.parametrize("page,target", LINKS,
                         ids=[f"{p.name}->{t}" for p, t in LINKS])
def test_every_link_in_the_docs_leads_somewhere(page, target):
    path, _, anchor = target.partition("#")
    dest = (page.parent / path).resolve() if path else page
    assert dest.exists(), f"{page.name}: {target} does not exist"
    if anchor and dest.suffix == ".md":
        assert anchor in _anchors(dest), f"{page.name}: no heading #{anchor} in {dest.name}"


def test_nothing_in_the_repository_points_outside_it():
    """A clone carries its own reference: no path into a folder beside the repository."""
    roots = ["README.md", "pyproject.toml", "docs", "san", "tests", "benchmarks", "scripts",
             "topologies"]
    files = [p for r in roots for p in ([ROOT / r] if (ROOT / r).is_file()
                                        else sorted((ROOT / r).rglob("*")))
             if p.is_file() and p.suffix in (".md", ".py", ".toml", ".yaml", ".json", ".sh")]
    needle = "../" + "shared"
    assert [str(p.relative_to(ROOT)) for p in files if needle in p.read_text(errors="replace")] \
        == []


def test_the_readme_lists_every_command():
    commands = cli._parser()._subparsers._group_actions[0].choices
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## The command line"):]
    assert [c for c in commands if f"| `san {c}" not in table] == []


def _report_keys() -> dict[str, set[str]]:
    """The keys the shipped scenarios' reports hold: top level, totals, steps, and each op's
    result."""
    keys: dict[str, set[str]] = {"report": set(), "totals": set(), "step": set()}

    def steps(entries):
        for entry in entries:
            keys["step"] |= set(entry) | {"wall_s"}       # the golden files leave wall_s out
            keys.setdefault(entry["op"], set()).update(entry["result"])
            steps(entry["result"].get("steps", []))
    for golden in sorted((ROOT / "tests" / "golden").glob("*.json")):
        report = json.loads(golden.read_text())
        keys["report"] |= set(report)
        keys["totals"] |= set(report["totals"]) | {"wall_s"}
        steps(report["steps"])
    return keys


def test_the_report_page_explains_every_field_the_reports_hold():
    text = (DOCS / "report.md").read_text()
    missing = {part: sorted(k for k in found if f"`{k}`" not in text)
               for part, found in _report_keys().items()}
    assert {part: found for part, found in missing.items() if found} == {}
    assert [op for op in OPS if f"`{op}`" not in text] == []
