"""Which artifact to ship, under a stated constraint, and whether distillation paid.

Candidates are the bench's artifacts that were measured and passed their parity gate: the
distilled student's, the teacher's own exports (only quantized) and those of other builds
measured alongside (``bench.with_builds``: e.g. CE-only training, plain fine-tuning).
Under the constraint (``bench.recommend``: answer retention at least ``min_retention``,
size at most ``max_mb``, decode speed at least ``min_decode_tokens_per_s``; 0 = no limit)
the smallest candidate is chosen (ties: the faster). The verdict then sets each
alternative's best artifact against the distilled student's of the same format and
quantization (else the closest in size), on retention and size.
"""

from __future__ import annotations

from dataclasses import dataclass

DISTILLED = "student"


@dataclass(frozen=True)
class Constraint:
    min_retention: float = 0.85
    max_mb: float = 0.0
    min_decode_tokens_per_s: float = 0.0

    def describe(self) -> str:
        parts = [f"retention >= {self.min_retention:.0%}"]
        if self.max_mb:
            parts.append(f"size <= {self.max_mb:g} MB")
        if self.min_decode_tokens_per_s:
            parts.append(f"decode >= {self.min_decode_tokens_per_s:g} tok/s")
        return ", ".join(parts)

    def fails(self, entry: dict) -> str | None:
        """Why ``entry`` does not meet the constraint, or None."""
        retention, size, speed = entry.get("retention"), entry.get("bytes"), entry.get("decode_tokens_per_s")
        if retention is None or retention < self.min_retention:
            return "retention below the floor" if retention is not None else "retention not measured"
        if self.max_mb and (size is None or size > self.max_mb * 1e6):
            return "too large"
        if self.min_decode_tokens_per_s and (speed is None or speed < self.min_decode_tokens_per_s):
            return "too slow"
        return None


def family(entry: dict) -> str:
    """What an artifact is: the distilled student, the teacher only quantized, or another build's."""
    source = entry.get("source") or DISTILLED
    if source == DISTILLED:
        return "distilled student"
    if source == "teacher":
        return "teacher, only quantized"
    build, _, inner = source.partition(":")
    return f"{build} ({'its teacher export' if inner == 'teacher' else 'its student'})"


def usable(entry: dict) -> bool:
    return not entry.get("missing") and entry.get("device_ready", True)


def recommend(artifacts: list[dict], constraint: Constraint) -> dict:
    """``{"constraint", "choice", "why", "verdict": [sentences]}`` from the bench's artifact
    entries (results.json's ``artifacts``)."""
    candidates = [e for e in artifacts if usable(e)]
    meeting = sorted((e for e in candidates if constraint.fails(e) is None),
                     key=lambda e: (e.get("bytes") or float("inf"), -(e.get("decode_tokens_per_s") or 0)))
    result = {"constraint": constraint.describe(), "choice": None, "why": None, "verdict": []}
    if meeting:
        best = meeting[0]
        result["choice"] = best["name"]
        result["why"] = (f"{best['name']} ({family(best)}): the smallest artifact that meets {constraint.describe()}: "
                         f"{_facts(best)}")
    else:
        top = max((e for e in candidates if e.get("retention") is not None), key=lambda e: e["retention"], default=None)
        result["why"] = (f"no artifact meets {constraint.describe()}" +
                         (f"; the best is {top['name']} ({family(top)}): {_facts(top)}" if top else ""))
    result["verdict"] = verdict(candidates, result["choice"])
    return result


def verdict(candidates: list[dict], choice: str | None) -> list[str]:
    """Sentences comparing the distilled student's best artifact with each alternative's."""
    by_family: dict[str, list[dict]] = {}
    for entry in candidates:
        if entry.get("retention") is not None:
            by_family.setdefault(family(entry), []).append(entry)
    own = by_family.pop("distilled student", [])
    if not own:
        return ["the distilled student has no measured, device-ready artifact: nothing to compare"]
    sentences = []
    for name, entries in by_family.items():
        other = _best(entries)
        ours = _counterpart(own, other)
        gap = ours["retention"] - other["retention"]
        size = (ours.get("bytes") or 0) / (other.get("bytes") or 1)
        if gap >= 0 and size <= 1:
            outcome = "distillation paid"
        elif gap < 0 and size >= 1:
            outcome = "distillation did not pay"
        else:
            outcome = "a trade"
        sentences.append(f"{outcome} against {name}: distilled {ours['name']} keeps {ours['retention']:.1%} at "
                         f"{_mb(ours)} vs {other['name']} {other['retention']:.1%} at {_mb(other)} "
                         f"({gap * 100:+.1f} points, {size:.2f}x the size)")
    chosen = next((e for e in candidates if e["name"] == choice), None)
    if chosen is not None and family(chosen) != "distilled student":
        sentences.append(f"under this constraint the pick is not the distilled student but {chosen['name']} "
                         f"({family(chosen)})")
    return sentences


def _counterpart(own: list[dict], other: dict) -> dict:
    """The distilled student's artifact to set against ``other``: the same format and
    quantization when it was exported, else the one closest in size."""
    same = [e for e in own if (e.get("format"), e.get("quantization")) == (other.get("format"), other.get("quantization"))]
    if same:
        return _best(same)
    return min(own, key=lambda e: abs((e.get("bytes") or 0) - (other.get("bytes") or 0)))


def _best(entries: list[dict]) -> dict | None:
    """The highest-retention entry (ties: the smaller)."""
    return max(entries, key=lambda e: (e["retention"], -(e.get("bytes") or 0)), default=None)


def _mb(entry: dict) -> str:
    return f"{entry['bytes'] / 1e6:.1f} MB" if entry.get("bytes") else "unknown size"


def _facts(entry: dict) -> str:
    interval = entry.get("retention_ci95")
    ci = f" (95% interval {interval[0]:.0%} to {interval[1]:.0%})" if interval else ""
    speed = entry.get("decode_tokens_per_s")
    what = "answer retention" if entry.get("retention_of") == "answers_rouge_l" else "top-1 retention"
    return (f"{entry['retention']:.1%} {what}{ci}, {_mb(entry)}"
            + (f", {speed:.0f} decode tok/s" if speed else ""))
