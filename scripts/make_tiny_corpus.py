"""Regenerate ``data/tiny_corpus.txt``: docstrings of a few standard-library modules.

The text is documentation prose with code samples, small enough to commit (~150 KB), and
licensed under the PSF licence like the Python sources it comes from. It feeds the
``tiny`` recipe (tokenizer training, distillation data) until the full documentation
corpus of the docs-assistant demo is built. Run with the Python whose docs you want:
``python -m scripts.make_tiny_corpus``.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

from edgedistill import demo

MODULES = (
    "json", "pathlib", "argparse", "collections", "functools", "itertools", "textwrap",
    "string", "shutil", "tempfile", "csv", "logging", "dataclasses", "enum", "heapq",
    "bisect", "contextlib", "fractions", "statistics", "urllib.parse", "difflib",
)
DEMO = Path(demo.__file__).parent  # what these tools write ships in the package
OUTPUT = DEMO / "data" / "tiny_corpus.txt"


def module_docs(module_name: str) -> list[str]:
    """Return the module docstring and its public members' docstrings, as paragraphs."""
    module = importlib.import_module(module_name)
    docs = [inspect.getdoc(module) or ""]
    for name, member in sorted(vars(module).items()):
        if name.startswith("_") or getattr(member, "__module__", None) != module.__name__:
            continue
        doc = inspect.getdoc(member)
        if doc:
            docs.append(f"{module_name}.{name}\n\n{doc}")
    return [d.strip() for d in docs if d.strip()]


def main() -> None:
    header = (
        f"# Docstrings of Python {sys.version.split()[0]} standard-library modules.\n"
        "# Source: the CPython standard library. Licence: PSF License Agreement.\n"
    )
    sections = [doc for name in MODULES for doc in module_docs(name)]
    OUTPUT.write_text(header + "\n\n".join(sections) + "\n", encoding="utf-8")
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size} bytes, {len(sections)} sections)")


if __name__ == "__main__":
    main()
