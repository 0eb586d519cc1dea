"""README and docs/: every relative link and anchor resolves, and the parameter tables in
docs/parameters.md are the ones segpp-params renders from the code (a parameter added, renamed
or re-described without the docs fails here)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from segpp_ros.ros.params import ALL_SPECS, render_markdown

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file (code blocks skipped)."""
    found, code = set(), False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            code = not code
        elif not code and (m := re.match(r"^#{1,6} (.*)", line)):
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower().replace("`", ""))
            found.add(slug.replace(" ", "-"))
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_resolve(page: Path) -> None:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name}: link to {target}: no such file"
        if anchor:
            assert anchor in anchors(file), f"{page.name}: link to {target}: no such heading in {file.name}"


def cells(row: str) -> list[str]:
    """The cells of a Markdown table row (an escaped \\| stays inside its cell)."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", row)]


def test_the_parameter_tables_are_the_rendered_ones() -> None:
    rendered = {cells(row)[1]: row for row in render_markdown().splitlines()[2:]}
    documented = [line for line in (ROOT / "docs" / "parameters.md").read_text().splitlines()
                  if line.startswith("| `")]
    names = [cells(row)[1] for row in documented]
    for spec in ALL_SPECS:
        name = f"`{spec.name}`"
        assert name in names, f"{spec.name} is not in docs/parameters.md"
        assert documented[names.index(name)] == rendered[name], f"docs/parameters.md row of {spec.name}"
    assert not [n for n in names if n not in rendered], "documented parameters that do not exist"
    assert len(names) == len(set(names)), "a parameter documented twice"
