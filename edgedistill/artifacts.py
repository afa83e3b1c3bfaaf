"""Artifacts, content hashes, atomic writes and the build manifest.

Every stage output is described by an :class:`Artifact`: the folder its files are
relative to, each file's sha256 and size, stage-specific facts (``payload``) and metrics.
The manifest (``<out>/manifest.json``) records, per stage, the config, the cache key,
the seconds spent and the artifact; it is always written last and atomically, so a
folder whose manifest says ``"status": "complete"`` really is complete.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgedistill import __version__

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA_VERSION = 1
_HASH_BLOCK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(value: Any) -> str:
    """Hash of a JSON-able value with sorted keys (stable across runs and machines)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _hash_cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edgedistill" / "file-hashes.json"


def sha256_file_cached(path: Path, min_bytes: int = 64 << 20) -> str:
    """sha256 of a file, remembered by (absolute path, size, mtime_ns) for large files.

    Every build re-checks its inputs (teacher weights, data); re-hashing gigabytes each
    time would make a fully cached rerun slow. Small files are simply hashed.
    """
    stat = path.stat()
    if stat.st_size < min_bytes:
        return sha256_file(path)
    cache_path = _hash_cache_path()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    try:
        cache = json.loads(cache_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        cache = {}
    if key not in cache:
        cache[key] = sha256_file(path)
        try:
            atomic_write_json(cache_path, cache)
        except OSError:
            pass  # a read-only home only costs re-hashing next time
    return cache[key]


def is_under(file_path: str, artifact_path: str) -> bool:
    """Whether a recorded file belongs to an artifact (the file itself or inside its folder)."""
    return file_path == artifact_path or file_path.startswith(artifact_path + "/")


@dataclass(frozen=True)
class FileRecord:
    path: str  # relative to the artifact root, POSIX separators
    sha256: str
    bytes: int


def record_files(root: Path, subpaths: list[str] | tuple[str, ...], cached: bool = False) -> tuple[FileRecord, ...]:
    """Hash every file under ``root/sub`` for each sub (a file or a folder), sorted by path.

    ``cached``: reuse hashes of large unchanged files (inputs such as teacher weights).
    """
    records = []
    for sub in subpaths:
        target = root / sub
        paths = [target] if target.is_file() else sorted(p for p in target.rglob("*") if p.is_file())
        for path in paths:
            rel = path.relative_to(root).as_posix()
            digest = sha256_file_cached(path) if cached else sha256_file(path)
            records.append(FileRecord(rel, digest, path.stat().st_size))
    return tuple(sorted(records, key=lambda r: r.path))


@dataclass(frozen=True)
class Artifact:
    """What a stage produced.

    ``root`` is the folder the files are relative to (the build folder for outputs of this
    build, or an external folder such as a local teacher). ``payload`` holds JSON-able,
    stage-specific facts (``model_dir``, the export list, parity results); ``parent`` is
    the artifact the stage consumed, so later stages can reach earlier ones.
    """

    stage: str
    root: Path
    files: tuple[FileRecord, ...]
    payload: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    parent: Artifact | None = None

    @property
    def hash(self) -> str:
        return sha256_json([[f.path, f.sha256] for f in self.files] + [self.payload])

    @property
    def model_dir(self) -> Path:
        """The HF model folder of a model-producing stage (teacher, prune, distill)."""
        return self.root / self.payload["model_dir"]

    def find(self, stage: str) -> Artifact:
        """This artifact or the nearest ancestor produced by ``stage``."""
        node: Artifact | None = self
        while node is not None:
            if node.stage == stage:
                return node
            node = node.parent
        raise KeyError(f"no '{stage}' artifact upstream of '{self.stage}'")

    def relocated(self, root: Path) -> Artifact:
        return dataclasses.replace(self, root=root)

    def to_record(self, build_dir: Path) -> dict:
        root = _relative_or_absolute(self.root, build_dir)
        return {
            "root": root,
            "hash": self.hash,
            "files": [dataclasses.asdict(f) for f in self.files],
            "payload": self.payload,
            "metrics": self.metrics,
        }

    @classmethod
    def from_record(cls, stage: str, record: dict, build_dir: Path, parent: Artifact | None) -> Artifact:
        root = Path(record["root"])
        return cls(
            stage=stage,
            root=root if root.is_absolute() else build_dir / root,
            files=tuple(FileRecord(**f) for f in record["files"]),
            payload=record["payload"],
            metrics=record["metrics"],
            parent=parent,
        )

    def file_problems(self, full_hash: bool = False) -> list[str]:
        """Problems with the files on disk (missing, resized, or with ``full_hash`` changed)."""
        problems = []
        for record in self.files:
            path = self.root / record.path
            if not path.is_file():
                problems.append(f"{record.path}: missing")
            elif path.stat().st_size != record.bytes:
                problems.append(f"{record.path}: {path.stat().st_size} bytes, expected {record.bytes}")
            elif full_hash and sha256_file(path) != record.sha256:
                problems.append(f"{record.path}: sha256 differs from the manifest")
        return problems


def _relative_or_absolute(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix() or "."
    except ValueError:
        return str(path.resolve())


def stage_key(stage: str, config: Any, input_hash: str) -> str:
    """Cache key of a stage output: hash of (stage, config, input artifact, version)."""
    return sha256_json({"stage": stage, "config": config, "input": input_hash, "version": __version__})


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf floats replaced by None: the file stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(json_safe(value), indent=2, allow_nan=False) + "\n")


def read_manifest(build_dir: Path) -> dict | None:
    path = build_dir / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None
    if manifest.get("schema_version") != MANIFEST_SCHEMA_VERSION:
        return None
    return manifest


def new_manifest(recipe: dict, versions: dict) -> dict:
    return {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "edgedistill_version": __version__,
        "status": "incomplete",
        "recipe": recipe,
        "versions": versions,
        "stages": {},
        "artifacts": [],
        "metrics": {},
    }
