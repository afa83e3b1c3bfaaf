"""The installed package's layers: no module imports one above it (every import, including
those inside functions, read from the source). A new top-level module or subpackage must be
given a layer here, which is the point: where it sits is a decision, not an accident."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "edgedistill"

# lowest first; a module may import its own layer and those below it
LAYERS = (
    ("foundation", {"edgedistill", "errors", "registry_names", "json_files", "processes", "stage_context", "text_stats",
                    "openai_client", "prices", "progress", "architectures", "hf", "artifacts"}),
    ("runtime", {"runtime"}),  # what an app embeds: no torch, no transformers
    ("data", {"demo", "data"}),
    ("formats and teacher data", {"datagen", "exporters"}),
    ("measurement", {"benchmarks"}),
    ("recipes", {"config", "recipe_checks", "recipe_loader", "recipe_reference"}),
    ("stages", {"pipeline"}),
    ("commands", {"build", "preflight", "cli", "cli_datagen", "cli_runtime", "summary"}),
)
RANK = {area: rank for rank, (_, areas) in enumerate(LAYERS) for area in areas}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _imports(source: str, module: str, is_package: bool = False) -> set[str]:
    """The edgedistill modules that ``source`` (module ``module``) imports anywhere in it."""
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # "from edgedistill import errors" and "from . import sampling" import modules by name
            by_name = target == "edgedistill" or (node.level and not node.module)
            found.update(f"{target}.{alias.name}" if by_name else target for alias in node.names)
    return {name for name in found if name == "edgedistill" or name.startswith("edgedistill.")}


def test_every_part_of_the_package_has_a_layer():
    areas = {_area(_module_name(path)) for path in PACKAGE.rglob("*.py")}
    assert areas - RANK.keys() == set(), "give each new module or subpackage a layer in LAYERS"


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        for target in sorted(_imports(path.read_text(encoding="utf-8"), module, path.name == "__init__.py")):
            if RANK.get(_area(target), -1) > RANK[_area(module)]:
                upward.append(f"{module} ({LAYERS[RANK[_area(module)]][0]}) -> {target} "
                              f"({LAYERS[RANK[_area(target)]][0]})")
    assert upward == []


def test_the_import_reader_sees_lazy_relative_and_from_package_imports():
    """The check above is only as good as the reader."""
    source = ("from edgedistill import errors\n"
              "from . import sampling\n"
              "def f():\n    from edgedistill.pipeline import prune\n    import edgedistill.build\n")
    assert _imports(source, "edgedistill.runtime.base") == {
        "edgedistill.errors", "edgedistill.runtime.sampling", "edgedistill.pipeline", "edgedistill.build"}


def test_no_script_ships_in_the_package():
    """Measurement scripts live in benchmarks/, one-off tools in scripts/: the only entry
    point the package installs is the CLI (and the architectures table it prints)."""
    mains = sorted(str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
                   if 'if __name__ == "__main__":' in path.read_text(encoding="utf-8"))
    assert mains == ["architectures.py", "cli.py"]


def test_modules_stay_under_400_lines():
    """STYLE.md: split a file before it becomes a second subject."""
    long = {str(path.relative_to(PACKAGE)): n for path in PACKAGE.rglob("*.py")
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > 400}
    assert long == {}
