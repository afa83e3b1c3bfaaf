"""What each ``distill.mode`` (logit, sequence, on_policy) can be combined with, checked
when a recipe is loaded, so a bad combination fails before anything runs."""

from __future__ import annotations

from edgedistill.errors import UserError
from edgedistill.registry_names import CROSS_OBJECTIVES  # noqa: F401 (re-exported: the cross-tokenizer objectives)

MODES = ("logit", "sequence", "on_policy")


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
