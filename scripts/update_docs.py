"""Rewrite the generated tables of the documentation from the code:
``python -m scripts.update_docs`` (tests/test_docs.py fails until this has run after a
change to the recipe schema or the architecture rows).

* README.md, between ``<!-- supported-models:begin/end -->``: ``architectures.supported_models_table()``
* docs/recipes.md, between ``<!-- recipe-keys:begin/end -->``: ``recipe_reference.key_table()``
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def generated_blocks() -> dict[tuple[str, str], str]:
    """(file relative to the repository, block name) -> the block's current text."""
    from edgedistill.architectures import supported_models_table
    from edgedistill.recipe_reference import key_table

    return {("README.md", "supported-models"): supported_models_table(), ("docs/recipes.md", "recipe-keys"): key_table()}


def block_pattern(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- {name}:begin -->\n)(.*?)(\n<!-- {name}:end -->)", re.S)


def written_block(text: str, name: str) -> str | None:
    match = block_pattern(name).search(text)
    return match.group(2) if match else None


def main() -> None:
    for (file, name), block in generated_blocks().items():
        path = REPO / file
        text = path.read_text(encoding="utf-8")
        if written_block(text, name) is None:
            raise SystemExit(f"{file} has no <!-- {name}:begin --> ... <!-- {name}:end --> block; add the markers")
        updated = block_pattern(name).sub(lambda m: m.group(1) + block + m.group(3), text)
        if updated != text:
            path.write_text(updated, encoding="utf-8")
            print(f"updated {file} ({name})")


if __name__ == "__main__":
    main()
