"""Chain-of-thought prompt templates and the rationale/answer split.

A template wraps the prompt (``{prompt}``) so the teacher reasons before it answers and
puts the answer after a marker line; :func:`split_rationale` keeps the two apart, as
"Distilling step-by-step" (Hsieh et al., 2023) trains on them as separate tasks
(``distill.sequence.cot_tasks``). Without a template the response is kept whole.
"""

from __future__ import annotations

import re
from pathlib import Path

from edgedistill.errors import UserError

ANSWER_MARKER = "Answer:"
COT_TEMPLATES = {
    "step-by-step": ("{prompt}\nLet's think step by step, then give the final answer on its own line "
                     f"starting with '{ANSWER_MARKER}'.\n"),
}


def load_template(spec: str) -> str:
    """``spec``: a builtin name (step-by-step), a file holding a template, or "" (none).
    The template must contain ``{prompt}`` exactly once."""
    if not spec:
        return ""
    text = COT_TEMPLATES.get(spec)
    if text is None:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise UserError(f"template {spec}: not a builtin ({', '.join(COT_TEMPLATES)}) and no such file")
        text = path.read_text(encoding="utf-8")
    if text.count("{prompt}") != 1:
        raise UserError(f"template {spec} must contain {{prompt}} exactly once (where the prompt goes)")
    return text


def apply_template(template: str, row: dict) -> dict:
    """The request body's prompt fields with ``template`` applied: to ``prompt``, or to the
    last user message of ``messages``."""
    if not template:
        return row
    if "prompt" in row:
        return {**row, "prompt": template.replace("{prompt}", row["prompt"])}
    messages = [dict(m) for m in row["messages"]]
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
    if last_user is None:
        raise UserError(f"prompt {row.get('id', '')}: a template needs a user message to wrap")
    messages[last_user]["content"] = template.replace("{prompt}", str(messages[last_user].get("content", "")))
    return {**row, "messages": messages}


def split_rationale(response: str, marker: str = ANSWER_MARKER) -> tuple[str, str] | None:
    """(rationale, answer) split at the last line starting with ``marker`` (case-insensitive);
    None when no such line or the answer after it is empty."""
    matches = list(re.finditer(rf"(?im)^[ \t]*{re.escape(marker)}", response))
    if not matches:
        return None
    cut = matches[-1]
    rationale, answer = response[:cut.start()].strip(), response[cut.end():].strip()
    return (rationale, answer) if answer else None
