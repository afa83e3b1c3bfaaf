"""The documentation stays true to the code: generated tables current, links resolving,
the README a front page that starts with the two fresh-machine commands CI runs."""

import re
from pathlib import Path

import pytest

from scripts.update_docs import generated_blocks, written_block

REPO = Path(__file__).parents[1]
DOCS = sorted((REPO / "docs").glob("*.md"))
FRONT_PAGE_LINES = 200


@pytest.mark.parametrize(("file", "name"), list(generated_blocks()))
def test_generated_tables_are_current(file, name):
    written = written_block((REPO / file).read_text(encoding="utf-8"), name)

    assert written is not None, f"{file} lost its <!-- {name}:begin/end --> markers"
    assert written == generated_blocks()[(file, name)], "run python -m scripts.update_docs"


def test_the_readme_is_a_front_page_starting_with_the_two_commands():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    first_block = readme.split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()

    assert len(readme.splitlines()) <= FRONT_PAGE_LINES
    assert [line.split()[:2] for line in first_block] == [["make", "build"], ["make", "test"]]
    assert "make test" in (REPO / ".ci" / "run").read_text(encoding="utf-8")  # CI runs the README's test command


@pytest.mark.parametrize("page", [REPO / "README.md", *DOCS], ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    text = page.read_text(encoding="utf-8")
    targets = [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", t)]
    missing = [t for t in targets if not (page.parent / t.split("#")[0]).exists()]

    assert missing == []


def test_every_docs_page_is_linked_from_the_readme():
    readme = (REPO / "README.md").read_text(encoding="utf-8")

    assert [page.name for page in DOCS if f"docs/{page.name}" not in readme] == []
