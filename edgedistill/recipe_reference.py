"""The recipe key reference, generated from the schema in ``config.py`` (each key's default,
allowed values and one-line reason), so the documentation cannot drift from what the loader
accepts: ``edgedistill recipes --keys`` prints it, ``python -m scripts.update_docs`` writes
it into ``docs/recipes.md`` and a test checks that copy is current."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Iterator

from edgedistill.config import Recipe


def recipe_keys(cls: type = Recipe, prefix: str = "") -> Iterator[tuple[str, Any, str, str]]:
    """(dotted key, default, allowed values, meaning) for every leaf key, in schema order."""
    hints = typing.get_type_hints(cls)
    for spec in dataclasses.fields(cls):
        key, hint = f"{prefix}{spec.name}", hints[spec.name]
        if dataclasses.is_dataclass(hint):
            yield from recipe_keys(hint, f"{key}.")
            continue
        default = spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()
        meta = spec.metadata
        yield key, default, _allowed(hint, meta), meta.get("doc", "")


def _allowed(hint: Any, meta: dict) -> str:
    choices = meta.get("choices")
    if choices is not None:
        return ", ".join(f"`{choice}`" for choice in choices())
    low, high = meta.get("low"), meta.get("high")
    if low is not None and high is not None:
        return f"{'>' if meta.get('low_open') else '>='} {low:g} and <= {high:g}"
    if low is not None:
        return f"{'>' if meta.get('low_open') else '>='} {low:g}"
    return _type_name(hint)


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (tuple, list):
        return f"list of {_type_name(typing.get_args(hint)[0])}"
    return {bool: "true / false", int: "integer", float: "number", str: "text"}.get(hint, str(hint))


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (tuple, list)):
        return "`[" + ", ".join(str(v) for v in value) + "]`"
    return '`""`' if value == "" else f"`{value}`"


def key_table() -> str:
    """Every recipe key as a Markdown table."""
    lines = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    for key, default, allowed, doc in recipe_keys():
        lines.append(f"| `{key}` | {_value(default)} | {allowed} | {doc.replace('|', '/')} |")
    return "\n".join(lines)
