"""Checks across a recipe's sections (what each ``distill.mode`` can be combined with,
what a teacher behind an API allows, ...), run when a recipe is loaded, so a bad
combination fails before anything runs. Per-key types and ranges live in ``config``."""

from __future__ import annotations

from edgedistill.errors import UserError
from edgedistill.registry_names import CROSS_OBJECTIVES


def check_recipe(recipe) -> None:
    """The rules that tie keys of different sections together (a UserError naming the fix),
    checked when a recipe is loaded so a bad combination fails before anything runs."""
    if not recipe.export.onnx and not recipe.export.gguf:
        raise UserError("export.onnx and export.gguf are both empty; name at least one format to export, e.g. export.gguf=[f16]")
    size = recipe.export.onnx_block_size
    if size & (size - 1):
        raise UserError(f"export.onnx_block_size must be a power of 2 (16, 32, 64, 128, ...), got {size}")
    if recipe.distill.teacher_topk and recipe.distill.objective != "forward_kl":
        raise UserError(f"distill.teacher_topk={recipe.distill.teacher_topk} trains on a top-k cache, which supports "
                        f"objective forward_kl only, not '{recipe.distill.objective}'; set distill.teacher_topk=0 or the objective")
    if recipe.prune.student and recipe.student == "prune":
        raise UserError("prune.student prunes an independent student, but student is prune (the pruned teacher); "
                        "name a student model or set prune.student=false")
    api, teacher = recipe.teacher_api, recipe.teacher
    if teacher == "api" and not api.for_distill:
        raise UserError("teacher: api distills from teacher_api.url, which is empty or has teacher_api.distill=false; "
                        "set it (e.g. teacher_api.url=http://127.0.0.1:8000/v1) or name a local teacher")
    if teacher == "api" and recipe.student == "prune":
        raise UserError("teacher: api has no local weights to prune; name an independent student "
                        "(e.g. student: builtin:smollm2-135m-instruct)")
    if teacher == "api" and recipe.bench.enabled:
        raise UserError("the bench scores every artifact against a local copy of the teacher, which teacher: api "
                        "does not have; set bench.enabled=false or name a local teacher")
    if recipe.distill.teacher_topk and recipe.distill.feature_weight:
        raise UserError("feature KD (distill.feature_weight > 0) needs the online teacher's hidden states; "
                        "set distill.teacher_topk=0 or distill.feature_weight=0")
    check_mode(recipe.distill, recipe.data, recipe.teacher_api)


def check_mode(distill, data, api) -> None:
    """What each ``distill.mode`` can be combined with (``api``: the recipe's ``teacher_api``
    section); a UserError naming the fix."""
    sequence = distill.sequence
    if api.url:
        from edgedistill.openai_client import check_base_url

        check_base_url(api.url, "teacher_api.url")
    if api.for_distill and distill.mode != "sequence":
        if api.mode == "chat":
            raise UserError(f"distill.mode={distill.mode} scores token windows through /completions (echo + logprobs), "
                            "which chat endpoints do not offer: set teacher_api.mode=completions or distill.mode=sequence")
        if not 1 <= distill.teacher_topk <= 20:
            raise UserError(f"teacher_api.url with distill.mode={distill.mode} trains on the API's top-k logprobs: "
                            "set distill.teacher_topk to 1-20 (APIs return at most 20 alternatives)")
        if distill.temperature != 1.0:
            raise UserError("an API's logprobs are at T = 1: set distill.temperature=1 with teacher_api.url")
    if distill.objective in CROSS_OBJECTIVES and (distill.mode != "logit" or api.for_distill or distill.teacher_topk
                                                  or distill.feature_weight):
        raise UserError(f"distill.objective={distill.objective} aligns an online local teacher's logits with the "
                        "student's by text: set distill.mode=logit, distill.teacher_topk=0, distill.feature_weight=0 "
                        "and no teacher_api.url (sequence mode distills across tokenizers by text already)")
    if (sequence.template or sequence.cot_tasks) and distill.mode != "sequence":
        raise UserError("distill.sequence.template and distill.sequence.cot_tasks shape the teacher's responses: "
                        "set distill.mode=sequence")
    if sequence.cot_tasks and not sequence.template:
        raise UserError("distill.sequence.cot_tasks trains on rationale and answer, which need "
                        "distill.sequence.template (e.g. step-by-step)")
    if sequence.template:
        from edgedistill.datagen.templates import load_template

        load_template(sequence.template)
    if distill.mode == "sequence":
        if distill.objective != "forward_kl" or distill.temperature != 1.0:
            raise UserError("distill.mode=sequence trains on the teacher's top-k log-probabilities at T = 1 (sparse "
                            "forward KL): set distill.objective=forward_kl and distill.temperature=1")
        if distill.feature_weight or distill.teacher_topk:
            raise UserError("distill.mode=sequence takes its teacher signal from the generated responses: set "
                            "distill.feature_weight=0 and distill.teacher_topk=0 (distill.sequence.topk sets k)")
    if distill.mode == "on_policy":
        if distill.teacher_topk and not api.for_distill:
            raise UserError("distill.mode=on_policy scores the student's own samples, which no offline cache holds: set "
                            "distill.teacher_topk=0 (a local teacher scores them in full)")
        if distill.prompt_tokens >= data.seq_len:
            raise UserError(f"distill.prompt_tokens={distill.prompt_tokens} leaves no room to generate in "
                            f"data.seq_len={data.seq_len}; lower it")
