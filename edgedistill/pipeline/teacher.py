"""Teacher stage: materialize the teacher as an HF folder and count its parameters.

``builtin:<name>`` builds a seeded tiny teacher into the build folder, or names a real
model shipped in a registry package (``REAL_MODEL_BUILTINS``); a local folder is used in
place (never copied or written to); a ``.gguf`` file (and a real builtin, which is one) is
dequantized once into a cached HF folder (``gguf_teacher``); a hub id is fetched into the
Hugging Face cache first (on a connected machine). ``teacher: api`` records only the
``teacher_api`` section: the model behind it is the teacher, no weights are here.
"""

from __future__ import annotations

import re
from pathlib import Path

from edgedistill.artifacts import Artifact, FileRecord, record_files
from edgedistill.errors import UserError
from edgedistill.stage_context import StageContext

OUTPUTS = ("teacher",)
BUILTIN_PREFIX = "builtin:"
API_TEACHER = "api"  # ``teacher: api``
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_MODEL_FILES = ("*.json", "*.safetensors", "*.bin", "*.model", "*.txt")
# Committed, trained teachers shipped inside the package (used in place, like a local folder).
BUILTIN_FOLDERS = {"pydocs-teacher": Path(__file__).parents[1] / "demo" / "teacher"}


def resolve_source(spec: str, role: str = "teacher") -> dict:
    """Preflight (before any output is written): where the teacher comes from.

    Returns ``{"kind": "builtin", "name": ...}`` or ``{"kind": "local", "path": ...,
    "files": [[path, sha256, bytes], ...]}`` (the content is part of the stage's cache
    key, so an edited teacher folder is never mistaken for a cached one); raises
    UserError naming the problem.
    """
    from edgedistill.demo.tiny import TINY_TEACHERS
    from edgedistill.hf import check_architecture
    from edgedistill.pipeline.gguf_teacher import REAL_MODEL_BUILTINS, import_gguf

    if spec == API_TEACHER and role == "teacher":
        return {"kind": "api"}
    name = spec[len(BUILTIN_PREFIX):] if spec.startswith(BUILTIN_PREFIX) else None
    if name in REAL_MODEL_BUILTINS:
        spec = str(import_gguf(REAL_MODEL_BUILTINS[name].locate()))
    elif spec.startswith(BUILTIN_PREFIX) and spec[len(BUILTIN_PREFIX):] in BUILTIN_FOLDERS:
        folder = BUILTIN_FOLDERS[spec[len(BUILTIN_PREFIX):]]
        if not (folder / "model.safetensors").is_file():
            raise UserError(f"the demo teacher is missing from {folder}; restore it from git or run python -m scripts.train_teacher")
        spec = str(folder)
    elif spec.startswith(BUILTIN_PREFIX):
        name = spec[len(BUILTIN_PREFIX):]
        if name not in TINY_TEACHERS:
            allowed = ", ".join(BUILTIN_PREFIX + n for n in [*TINY_TEACHERS, *BUILTIN_FOLDERS, *REAL_MODEL_BUILTINS])
            raise UserError(f"{role} '{spec}' is not a builtin {role}; builtin: {allowed}")
        return {"kind": "builtin", "name": name}
    path = Path(spec).expanduser()
    if not path.exists() and _HUB_ID.match(spec) and not spec.startswith((".", "/", "~")):
        path = _download(spec)
    if path.is_file() and path.suffix.lower() == ".gguf":
        path = import_gguf(path)
    elif path.is_file():
        raise UserError(f"{role} path '{spec}' is a file; give the HF model folder that holds config.json, or a .gguf file")
    if not path.is_dir():
        raise UserError(f"{role} path '{spec}' does not exist; give a local HF model folder, a .gguf file, a hub id, or builtin:tiny-llama")
    check_architecture(path)
    _check_loadable(path, role)
    _check_fits_memory(path)
    files = [[f.path, f.sha256, f.bytes] for f in _model_files(path)]
    return {"kind": "local", "path": str(path.resolve()), "files": files}


def _check_loadable(path: Path, role: str = "teacher") -> None:
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise UserError(f"{role} folder {path} has no weights (*.safetensors or *.bin); save it with save_pretrained")
    if not (path / "tokenizer.json").is_file() and not (path / "tokenizer.model").is_file():
        raise UserError(f"{role} folder {path} has no tokenizer (tokenizer.json or tokenizer.model); save the tokenizer beside it")


# The build holds the teacher and a student of at most its size in fp32 at once (prune and
# distill), whatever dtype the checkpoint is stored in: the floor of what it needs.
_BUILD_COPIES_FP32 = 2


def _check_fits_memory(path: Path) -> None:
    """Refuse before loading a teacher whose fp32 weights, twice (teacher and student),
    cannot fit in the memory available now; counted from safetensors headers, or from
    the size of pickled ``*.bin`` weights read as fp32."""
    from edgedistill.hf import count_parameters_on_disk
    from edgedistill.pipeline.gguf_teacher import available_memory

    parameters = count_parameters_on_disk(path)
    if parameters is None:
        parameters = sum(f.stat().st_size for f in path.glob("*.bin")) // 4
    needed = parameters * 4 * _BUILD_COPIES_FP32
    available = available_memory()
    if available is not None and needed > available:
        raise UserError(f"teacher {path.name} has {parameters / 1e6:,.0f}M parameters: teacher and student in fp32 need "
                        f"at least {needed / 2**30:.1f} GiB but {available / 2**30:.1f} GiB is available; "
                        "use a machine with more memory or a smaller teacher")


def _download(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id))
    except Exception as exc:  # network, auth, missing repo: all mean "no teacher here"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"could not fetch teacher '{repo_id}' from the hub ({reason}); pass a local model folder instead") from None


def _model_files(path: Path):
    names = sorted({p.name for pattern in _MODEL_FILES for p in path.glob(pattern) if p.is_file()})
    return record_files(path, names, cached=True)


def teacher_config(source: dict) -> dict:
    """The teacher's config.json (for a tiny builtin: the facts it is built from)."""
    from edgedistill.demo.tiny import TINY_TEACHERS
    from edgedistill.hf import read_config

    if source["kind"] == "builtin":
        return dict(TINY_TEACHERS[source["name"]])
    return read_config(Path(source["path"]))


def context_length(source: dict) -> int:
    """The teacher's trained context (max_position_embeddings); the student inherits it."""
    return teacher_config(source)["max_position_embeddings"]


def check_stage_support(recipe, source: dict) -> None:
    """What the stages will ask of the teacher's architecture row, checked before anything
    runs: the prune dimensions the recipe cuts, and for GGUF export the RoPE type, the
    attention details llama.cpp reproduces and the tokenizer kind and pre-tokenizer."""
    import json

    from edgedistill.architectures import architecture, refused_dimensions
    from edgedistill.pipeline.prune_targets import requested_dimensions

    config = teacher_config(source)
    row = architecture(config.get("model_type", ""))
    prunes = recipe.student == "prune" or recipe.prune.student
    refused = refused_dimensions(row, requested_dimensions(recipe.prune)) if prunes else None
    if refused:
        raise UserError(refused)
    if not recipe.export.gguf:
        return
    from edgedistill.exporters.gguf import check_gguf_config, check_gguf_tokenizer

    check_gguf_config(config)
    if source["kind"] == "local" and (Path(source["path"]) / "tokenizer.json").is_file():
        path = Path(source["path"]) / "tokenizer.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"{path} is not valid JSON ({exc}); regenerate it with save_pretrained") from None
        check_gguf_tokenizer(data, path, config.get("vocab_size"))


def check_sequence_budget(recipe, source: dict, student: dict | None = None) -> None:
    """Every sequence the build will run must fit the model's context (the teacher's, and
    an independent student's): fail before writing."""
    from edgedistill.benchmarks.decode import BENCH_PROMPT_TOKENS_MAX
    from edgedistill.exporters.verify import GREEDY_PROMPT_TOKENS

    if source["kind"] == "api":  # the API's context is its own business; the student's is ours
        limit = context_length(student)
    else:
        limit = context_length(source) if student is None else min(context_length(source), context_length(student))
    needs = {
        "data.seq_len": recipe.data.seq_len,
        "verify.positions": recipe.verify.positions,
        "verify.greedy_tokens": GREEDY_PROMPT_TOKENS + recipe.verify.greedy_tokens,
        # a question of the bench's prompt set or probe set (about the length of BENCH_PROMPT) and its answer;
        # the latency set's passages shrink to fit
        "bench.decode_tokens": BENCH_PROMPT_TOKENS_MAX + recipe.bench.decode_tokens,
        "bench.answer_tokens": BENCH_PROMPT_TOKENS_MAX + recipe.bench.answer_tokens,
    }
    distill = recipe.distill
    if distill.mode == "on_policy" or (distill.mode == "sequence" and not distill.sequence.prompts):
        # a window's opening and what is generated after it (teacher responses, student samples)
        needs["distill.response_tokens"] = distill.prompt_tokens + distill.response_tokens
    for key, tokens in needs.items():
        if tokens > limit:
            whose = "teacher's" if student is None else "models'"
            raise UserError(f"{key} needs {tokens} tokens of context but the {whose} context is {limit}; lower {key}")


def materialize(source: dict, out_dir: Path, seed: int, name: str) -> tuple[Path, Path, str, tuple]:
    """A resolved model source as an HF folder: (model dir, artifact root, model dir relative
    to it, file records). A tiny builtin is built into ``out_dir / name``; a local folder is
    used in place (hashed in preflight)."""
    if source["kind"] == "builtin":
        from edgedistill.demo.tiny import build_tiny_teacher

        model_dir = build_tiny_teacher(source["name"], out_dir / name, seed=seed)
        return model_dir, out_dir, name, record_files(out_dir, [name])
    model_dir = Path(source["path"])
    return model_dir, model_dir, ".", tuple(FileRecord(*record) for record in source["files"])


def run(cfg: dict, inp: Artifact | None, ctx: StageContext) -> Artifact:
    """cfg: {"teacher": spec, "seed": int, "source": resolve_source(spec), "teacher_api": section}."""
    out_dir = ctx.out_dir
    from edgedistill.hf import count_parameters, count_parameters_on_disk, load_model

    if cfg["source"]["kind"] == "api":  # nothing to materialize: the record names the API
        api = cfg["teacher_api"]
        return Artifact("teacher", out_dir, (), payload={"api": {"url": api.url, "model": api.model}})

    model_dir, root, rel, files = materialize(cfg["source"], out_dir, cfg["seed"], "teacher")
    params = count_parameters_on_disk(model_dir) or count_parameters(load_model(model_dir))
    return Artifact("teacher", root, files, payload={"model_dir": rel}, metrics={"teacher_params": params})


def source_vocabulary(source: dict) -> dict:
    """A source's tokenizer vocabulary (text -> id); the tiny builtins all share the
    tokenizer trained on the shipped corpus, trained again here (milliseconds)."""
    if source["kind"] == "builtin":
        from edgedistill.demo.tiny import TINY_CORPUS, train_tokenizer

        return train_tokenizer(TINY_CORPUS.read_text(encoding="utf-8")).get_vocab()
    from edgedistill.hf import load_tokenizer

    return load_tokenizer(Path(source["path"])).get_vocab()


def check_objective_fits_tokenizers(recipe, teacher: dict, student: dict | None) -> None:
    """An independent student of another tokenizer needs an objective that compares
    across vocabularies (uld, gold) or the sequence mode (teacher text re-tokenized):
    refused at load, never a silent CE fallback."""
    from edgedistill.registry_names import CROSS_OBJECTIVES

    if student is None or teacher["kind"] == "api" or source_vocabulary(teacher) == source_vocabulary(student):
        return  # an API's tokenizer is unknown here: its scores are checked against min_aligned_share when they come
    if recipe.bench.enabled:
        raise UserError("teacher and student tokenizers differ and the bench compares them token by token in one "
                        "vocabulary: set bench.enabled=false (a cross-tokenizer bench is not built yet)")
    if recipe.distill.objective not in CROSS_OBJECTIVES and recipe.distill.mode != "sequence":
        raise UserError(f"teacher and student tokenizers differ and distill.objective={recipe.distill.objective} compares "
                        "logits token by token: set distill.objective=uld or gold (text-aligned), or distill.mode=sequence")
