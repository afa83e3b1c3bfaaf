"""What each ``distill.mode`` (logit, sequence, on_policy) can be combined with, checked
when a recipe is loaded, so a bad combination fails before anything runs."""

from __future__ import annotations

from edgedistill.errors import UserError

MODES = ("logit", "sequence", "on_policy")
# objectives that compare a teacher and a student of different vocabularies (cross_tokenizer.py)
CROSS_OBJECTIVES = ("uld", "gold")


def objectives() -> tuple[str, ...]:
    """Every ``distill.objective``: the same-vocabulary divergences, then the cross-tokenizer ones."""
    from edgedistill.pipeline.distill.losses import KD_OBJECTIVES

    return (*KD_OBJECTIVES, *CROSS_OBJECTIVES)


def check_mode(distill, data) -> None:
    """What each ``distill.mode`` can be combined with; a UserError naming the fix."""
    if distill.teacher_api:
        from edgedistill.benchmarks.client import check_base_url

        check_base_url(distill.teacher_api, "distill.teacher_api")
    if distill.teacher_api and distill.mode != "sequence":
        if not 1 <= distill.teacher_topk <= 20:
            raise UserError(f"distill.teacher_api with distill.mode={distill.mode} trains on the API's top-k logprobs: "
                            "set distill.teacher_topk to 1-20 (APIs return at most 20 alternatives)")
        if distill.temperature != 1.0:
            raise UserError("an API's logprobs are at T = 1: set distill.temperature=1 with distill.teacher_api")
    if distill.objective in CROSS_OBJECTIVES and (distill.mode != "logit" or distill.teacher_api or distill.teacher_topk
                                                  or distill.feature_weight):
        raise UserError(f"distill.objective={distill.objective} aligns an online local teacher's logits with the "
                        "student's by text: set distill.mode=logit, distill.teacher_topk=0, distill.feature_weight=0 "
                        "and no distill.teacher_api (sequence mode distills across tokenizers by text already)")
    if (distill.template or distill.cot_tasks) and distill.mode != "sequence":
        raise UserError("distill.template and distill.cot_tasks shape the teacher's responses: set distill.mode=sequence")
    if distill.cot_tasks and not distill.template:
        raise UserError("distill.cot_tasks trains on rationale and answer, which need distill.template (e.g. step-by-step)")
    if distill.template:
        from edgedistill.datagen.templates import load_template

        load_template(distill.template)
    if distill.mode == "sequence":
        if distill.objective != "forward_kl" or distill.temperature != 1.0:
            raise UserError("distill.mode=sequence trains on the teacher's top-k log-probabilities at T = 1 (sparse "
                            "forward KL): set distill.objective=forward_kl and distill.temperature=1")
        if distill.feature_weight or distill.teacher_topk:
            raise UserError("distill.mode=sequence takes its teacher signal from the generated responses: set "
                            "distill.feature_weight=0 and distill.teacher_topk=0 (distill.sequence_topk sets k)")
    if distill.mode == "on_policy":
        if distill.teacher_topk and not distill.teacher_api:
            raise UserError("distill.mode=on_policy scores the student's own samples, which no offline cache holds: set "
                            "distill.teacher_topk=0 (a local teacher scores them in full)")
        if distill.prompt_tokens >= data.seq_len:
            raise UserError(f"distill.prompt_tokens={distill.prompt_tokens} leaves no room to generate in "
                            f"data.seq_len={data.seq_len}; lower it")
