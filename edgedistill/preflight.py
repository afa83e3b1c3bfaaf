"""Preflight: every input of a build checked before anything is written (the teacher and
student, the sequence budget against their context, what each stage supports, the data,
prompt, evaluation and price files, the teacher API's URL), and the content hashes of the
data files that go into the stage keys, so edited data is never mistaken for cached data."""

from __future__ import annotations

from pathlib import Path

from edgedistill.config import Recipe


def preflight(recipe: Recipe) -> dict:
    """Check every input before anything is written; raises UserError naming the problem.

    Returns what the stage configs need beyond the recipe: the teacher's source and the
    content hashes of the data files (so edited data is never mistaken for cached data).
    """
    from edgedistill.data import data_files
    from edgedistill.pipeline.distill.chat_answers import check_answers_supported
    from edgedistill.pipeline.teacher import (
        check_objective_fits_tokenizers, check_sequence_budget, check_stage_support, resolve_source,
    )

    source = resolve_source(recipe.teacher)
    student = None if recipe.student == "prune" else resolve_source(recipe.student, role="student")
    check_sequence_budget(recipe, source, student)
    check_stage_support(recipe, student or source)
    check_objective_fits_tokenizers(recipe, source, student)
    check_answers_supported(recipe)
    if recipe.teacher == "api" and (recipe.export.teacher_onnx or recipe.export.teacher_gguf):
        from edgedistill.errors import UserError

        raise UserError("export.teacher_onnx / export.teacher_gguf export the teacher's weights, and teacher: api has "
                        "none here; leave them empty")
    calibration = recipe.export.calibration or recipe.data.path
    return {"teacher_source": source, "student_source": student, "data_content": _content(data_files(recipe.data.path)),
            "eval_content": _content(_eval_files(recipe)), "prompts_content": _content(_prompt_files(recipe)),
            "calibration_content": _content(data_files(calibration, "export.calibration"))}


def _content(files: list[Path]) -> list:
    """[name, sha256, bytes] per file: the part of a stage's cache key that is data."""
    from edgedistill.artifacts import sha256_file_cached

    return [[file.name, sha256_file_cached(file), file.stat().st_size] for file in files]


def _prompt_files(recipe: Recipe) -> list[Path]:
    """The sequence mode's prompts file, checked to parse before anything runs."""
    if recipe.distill.mode != "sequence" or not recipe.distill.sequence.prompts:
        return []
    from edgedistill.pipeline.distill.sequence import read_prompt_rows

    path = Path(recipe.distill.sequence.prompts).expanduser()
    read_prompt_rows(path)
    return [path]


def _eval_files(recipe: Recipe) -> list[Path]:
    """The bench stage's input files: evaluation text, QA set, probe questions and price
    table, each checked to exist and (but the text) to parse before anything runs; and
    the teacher API's URL checked to be one."""
    from edgedistill.benchmarks.probes import PROBE_BUILTINS, load_probes
    from edgedistill.data import data_files
    from edgedistill.pipeline.evaluate import QA_BUILTINS, load_qa_pairs
    from edgedistill.prices import load_prices

    bench = recipe.bench
    if not bench.enabled:
        return []
    files = []
    if bench.eval_path:
        files.extend(data_files(bench.eval_path, "bench.eval_path"))
    if bench.qa_path:
        load_qa_pairs(bench.qa_path)  # validates every row before anything runs
        files.append(QA_BUILTINS.get(bench.qa_path) or Path(bench.qa_path).expanduser())
    if len(bench.answer_stop) > 4:
        from edgedistill.errors import UserError

        raise UserError(f"bench.answer_stop has {len(bench.answer_stop)} strings; OpenAI-compatible APIs take at most 4")
    if recipe.teacher_api.url:
        from edgedistill.openai_client import check_base_url

        check_base_url(recipe.teacher_api.url, "teacher_api.url")
    if bench.lm_eval:
        from edgedistill.benchmarks.lm_eval_bench import check_tasks

        files.extend(check_tasks(bench.lm_eval))
    if bench.with_builds:
        from edgedistill.pipeline.bench import read_finished_build

        for folder in bench.with_builds:
            read_finished_build(Path(folder))
            files.append(Path(folder) / "manifest.json")  # the bench reruns when another build changed
    if bench.answers.questions:
        from edgedistill.benchmarks.answers import BUILTIN, INDEPENDENT_FILE, load_answer_questions

        if bench.student_api_mode != "chat":
            from edgedistill.errors import UserError

            raise UserError("bench.answers asks the questions in chat form; set bench.student_api_mode=chat")
        load_answer_questions(bench.answers.questions, 1, 1, 0)  # validates a file's rows before anything runs
        files.append(INDEPENDENT_FILE if bench.answers.questions == BUILTIN else Path(bench.answers.questions).expanduser())
    else:
        load_probes(bench.probe_path)
        files.append(PROBE_BUILTINS.get(bench.probe_path) or Path(bench.probe_path).expanduser())
    cost = bench.cost
    files.append(Path(load_prices(cost.prices, cost.api_price, cost.hardware).file))
    return files
