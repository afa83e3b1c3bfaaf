"""The benchmark's prompts: probe questions in several phrasings (over-distillation
checks) and the latency prompt set built from them.

A probe file is JSONL, one question per row: ``{"id": ..., "phrasings": [text, ...]}``
with at least two phrasings (the same question reworded), each exactly as the model
should read it (the bundled set ends every phrasing with a blank line, the form of the
FAQ text the demo teacher was trained on).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgedistill.errors import UserError
from edgedistill.json_files import numbered_rows

PROBE_BUILTINS = {"builtin:pydocs-probes": Path(__file__).parents[1] / "demo" / "data" / "pydocs" / "probes.jsonl"}


@dataclass(frozen=True)
class Probe:
    id: str
    phrasings: tuple[str, ...]


def load_probes(spec: str, limit: int = 0) -> list[Probe]:
    """Rows of a probe file or a builtin set (the first ``limit`` when > 0)."""
    path = PROBE_BUILTINS.get(spec) or Path(spec).expanduser()
    if not path.is_file():
        raise UserError(f"bench.probe_path '{spec}' is not a file; give a JSONL file of "
                        f"{{\"id\", \"phrasings\": [...]}} rows or {', '.join(PROBE_BUILTINS)}")
    probes = []
    for number, row in numbered_rows(path, f"bench.probe_path {path}"):
        phrasings = row.get("phrasings") if isinstance(row, dict) else None
        if not (isinstance(phrasings, list) and len(phrasings) >= 2
                and all(isinstance(p, str) and p.strip() for p in phrasings)):
            raise UserError(f"bench.probe_path {path} line {number} needs 'phrasings': two or more non-empty texts")
        probes.append(Probe(str(row.get("id", number)), tuple(phrasings)))
    if not probes:
        raise UserError(f"bench.probe_path {path} holds no probes")
    return probes[:limit] if limit else probes


def latency_prompts(probes: list[Probe], passages: list[str], count: int) -> list[str]:
    """``count`` prompts of realistic lengths: a documentation assistant gets bare
    questions and questions after a retrieved passage, so every other prompt is a passage
    followed by a question (bare questions only when there are no passages)."""
    prompts = []
    for index in range(count):
        question = probes[index % len(probes)].phrasings[0]
        if index % 2 and passages:
            prompts.append(passages[(index // 2) % len(passages)].rstrip() + "\n\n" + question)
        else:
            prompts.append(question)
    return prompts
