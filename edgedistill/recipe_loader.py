"""Reading a recipe: a bundled name or a YAML file, its ``schedules`` and ``alternatives``,
``--set key=value`` overrides (values parsed as YAML), then every value checked against
the schema in ``config`` (unknown keys with the closest known one, wrong types, values out
of range, keys of earlier releases with their new name): a ``UserError`` naming the dotted
key and what is allowed, so the CLI prints one line and exits 2."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import typing
from pathlib import Path
from typing import Any

import yaml

from edgedistill.config import Recipe
from edgedistill.errors import UserError

RECIPES_DIR = Path(__file__).with_name("recipes")

# Keys of earlier releases -> where they live now; a recipe naming one is refused with the new name.
MOVED_KEYS = {
    "distill.teacher_api": "teacher_api.url",
    "distill.teacher_api_model": "teacher_api.model",
    "distill.teacher_api_key_env": "teacher_api.key_env",
    "distill.teacher_api_retries": "teacher_api.retries",
    "bench.teacher_api": "teacher_api.url",
    "bench.teacher_model": "teacher_api.model",
    "bench.teacher_api_key_env": "teacher_api.key_env",
    "bench.teacher_api_mode": "teacher_api.mode",
    "distill.prompts": "distill.sequence.prompts",
    "distill.sequence_prompts": "distill.sequence.windows",
    "distill.sequence_topk": "distill.sequence.topk",
    "distill.template": "distill.sequence.template",
    "distill.cot_tasks": "distill.sequence.cot_tasks",
    "distill.lmbda": "distill.on_policy.lmbda",
    "prune.mlp_keep": "prune.ratios.mlp",
    "prune.hidden_keep": "prune.ratios.hidden",
    "prune.layers_keep": "prune.ratios.layers",
    **{f"bench.{name}": f"bench.cost.{name}" for name in (
        "prices", "api_price", "hardware", "requests_per_day", "input_tokens_per_request", "output_tokens_per_request",
        "utilization")},
}


def bundled_recipes() -> dict[str, Path]:
    """Recipe name -> YAML path for the recipes shipped in the package."""
    return {p.stem: p for p in sorted(RECIPES_DIR.glob("*.yaml"))}


def load_recipe(source: str | None, overrides: list[str] | tuple[str, ...] = (), default: str = "tiny") -> Recipe:
    """Resolve a recipe name or YAML path, apply ``key=value`` overrides and validate."""
    path = _recipe_path(source or default)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"recipe {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"recipe {path} must be a mapping of keys to values, got {type(data).__name__}")
    data.setdefault("name", path.stem)
    _apply_schedule(data, overrides, path)
    _apply_alternative(data, overrides, path)
    for override in overrides:
        _apply_override(data, override)
    return from_dict(Recipe, data)


def _apply_alternative(data: dict, overrides, path: Path) -> None:
    """A recipe's ``alternatives`` (name -> {dotted key: value}): the simpler ways to the same
    goal that its bench compares with (``bench.with_builds``). ``--set alternative=NAME``
    applies one on top of the schedule (under the command line's other overrides), renames
    the build ``<name>-<alternative>`` (its own default folder) and drops the map."""
    alternatives = data.pop("alternatives", None) or {}
    chosen = next((o.partition("=")[2].strip() for o in reversed(overrides)
                   if o.partition("=")[0].strip() == "alternative"), None) or data.get("alternative") or ""
    if not chosen:
        return
    if chosen not in alternatives or not isinstance(alternatives[chosen], dict):
        names = ", ".join(alternatives) if isinstance(alternatives, dict) and alternatives else "none"
        raise UserError(f"alternative '{chosen}' is not one of recipe {path.name}'s alternatives ({names})")
    for key, value in alternatives[chosen].items():
        _set_key(data, str(key), value)
    data["alternative"] = chosen
    data["name"] = f"{data['name']}-{chosen}"


def _apply_schedule(data: dict, overrides, path: Path) -> None:
    """A recipe's ``schedules`` (name -> {dotted key: value}) resolved in place: the one that
    ``schedule`` names (``--set schedule=NAME``, else the recipe's, else its first) is applied
    under the command line's overrides, and ``schedules`` is dropped (the manifest records
    the resolved recipe and the schedule's name)."""
    schedules = data.pop("schedules", None) or {}
    chosen = next((o.partition("=")[2].strip() for o in reversed(overrides) if o.partition("=")[0].strip() == "schedule"),
                  None) or data.get("schedule") or next(iter(schedules), "")
    if not schedules:
        if chosen:
            raise UserError(f"schedule '{chosen}': recipe {path.name} has no schedules; leave schedule out")
        return
    if not isinstance(schedules, dict) or not all(isinstance(v, dict) for v in schedules.values()):
        raise UserError(f"recipe {path.name}: schedules must map each name to {{dotted.key: value}} overrides")
    if chosen not in schedules:
        raise UserError(f"schedule '{chosen}' is not one of recipe {path.name}'s schedules: {', '.join(schedules)}")
    for key, value in schedules[chosen].items():
        _set_key(data, str(key), value)
    data["schedule"] = chosen


def recipe_with_overrides(data: dict, overrides: list[str] | tuple[str, ...]) -> Recipe:
    """A recipe from its dict form (a manifest's ``recipe``) with ``key=value`` overrides."""
    data = copy.deepcopy(data)
    for override in overrides:
        _apply_override(data, override)
    return from_dict(Recipe, data)


def _recipe_path(source: str) -> Path:
    bundled = bundled_recipes()
    if source in bundled:
        return bundled[source]
    path = Path(source).expanduser()
    if path.is_file():
        return path
    raise UserError(f"recipe '{source}' is neither a bundled recipe ({', '.join(bundled)}) nor a YAML file")


def _apply_override(data: dict, override: str) -> None:
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set expects key=value (e.g. distill.alpha=0.3), got '{override}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    _set_key(data, key.strip(), value)


def _set_key(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"--set {key}: '{part}' is not a section")
    node[parts[-1]] = value


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types."""
    where = prefix.rstrip(".") or "recipe"
    if not isinstance(data, dict):
        raise UserError(f"recipe key '{where}' must be a section (mapping), got {_type_name(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in data:
        moved = MOVED_KEYS.get(f"{prefix}{key}")
        if moved:
            raise UserError(f"recipe key '{prefix}{key}' has moved to '{moved}'; rename it in the recipe or --set")
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f"did you mean '{prefix}{close[0]}'? " if close else ""
            raise UserError(f"recipe key '{prefix}{key}' is unknown; {hint}allowed in {where}: {', '.join(fields)}")
    values = {}
    for name, value in data.items():
        hint, meta = hints[name], fields[name].metadata
        if dataclasses.is_dataclass(hint):
            values[name] = from_dict(hint, value, f"{prefix}{name}.")
        else:
            values[name] = _check_value(f"{prefix}{name}", hint, value, meta)
    return cls(**values)


def _check_value(key: str, hint: Any, value: Any, meta: dict) -> Any:
    if typing.get_origin(hint) is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UserError(f"recipe key '{key}' must be a list of strings, got {_type_name(value)}")
        value = tuple(value)
        items = value
    else:
        value = _coerce_scalar(key, hint, value)
        items = (value,)
    choices = meta.get("choices")
    if choices is not None:
        allowed = choices()
        bad = [v for v in items if v not in allowed]
        if bad:
            raise UserError(f"recipe key '{key}' has unsupported value '{bad[0]}'; allowed: {', '.join(allowed)}")
    _check_range(key, value, meta)
    return value


def _coerce_scalar(key: str, hint: Any, value: Any) -> Any:
    if hint is float and isinstance(value, str):
        try:  # YAML 1.1 reads 1e-4 (no dot) as a string
            value = float(value)
        except ValueError:
            pass
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[hint]
    if not ok:
        raise UserError(f"recipe key '{key}' must be {hint.__name__}, got {_type_name(value)} {value!r}")
    return float(value) if hint is float else value


def _check_range(key: str, value: Any, meta: dict) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"recipe key '{key}' must be a finite number, got {value}")
    low, high = meta.get("low"), meta.get("high")
    if low is not None and (value < low or (meta.get("low_open") and value == low)):
        relation = ">" if meta.get("low_open") else ">="
        raise UserError(f"recipe key '{key}' must be {relation} {low}, got {value}")
    if high is not None and value > high:
        raise UserError(f"recipe key '{key}' must be <= {high}, got {value}")


def _type_name(value: Any) -> str:
    return {dict: "mapping", list: "list", type(None): "null"}.get(type(value), type(value).__name__)
