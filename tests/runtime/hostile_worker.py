"""Load, run and verify damaged artifacts in a process of their own:
``python -m tests.runtime.hostile_worker CASES OUT [REFERENCE_MODEL_DIR]``.

CASES: a JSON list of {"id", "path"} (and "verify": [format, quantization] for exported
artifacts). For each, ``edgedistill.runtime.load`` then a two-token ``generate``, then, for
an export, the parity gate (``exporters.verify.check_artifact``) against the reference
torch model, as the verify stage runs it; the outcome ("ok", or the exception's type and
message) is appended to OUT as one JSON line *before* the next case starts, and "started"
lines before each case, so a crash of the whole process (a segfault inside a runtime)
still names the case that did it. The last line holds the process's peak resident memory.
"""

from __future__ import annotations

import json
import resource
import sys


def main(cases_file: str, out_file: str, reference_dir: str | None = None) -> None:
    from edgedistill.runtime import load

    cases = json.loads(open(cases_file, encoding="utf-8").read())
    gate = Gate(reference_dir) if reference_dir else None
    with open(out_file, "a", encoding="utf-8") as out:
        for case in cases:
            out.write(json.dumps({"started": case["id"]}) + "\n")
            out.flush()
            outcome = {"id": case["id"], **_attempt(lambda: load(case["path"], threads=1).generate(
                "The", max_tokens=2, temperature=0.0))}
            if gate and case.get("verify"):
                verdict = {}
                outcome["verify"] = _attempt(lambda: verdict.update(gate.check(case["path"], *case["verify"])))
                outcome["verify"].update(device_ready=verdict.get("device_ready"), failures=verdict.get("failures"))
            out.write(json.dumps(outcome) + "\n")
            out.flush()
        out.write(json.dumps({"peak_rss_mib": peak_rss_kib() / 1024}) + "\n")


def _attempt(action) -> dict:
    try:
        action()
        return {"outcome": "ok"}
    except Exception as exc:  # what the test judges: the type and its message
        kind = "ValueError" if isinstance(exc, ValueError) else type(exc).__name__  # what the CLI one-lines
        return {"outcome": kind, "type": type(exc).__name__, "message": str(exc)}


class Gate:
    """The parity gate of the verify stage against one torch model, loaded once."""

    def __init__(self, reference_dir: str):
        from edgedistill.config import VerifyConfig
        from edgedistill.hf import load_model, load_tokenizer

        self.model, self.tokenizer, self.settings = load_model(reference_dir), load_tokenizer(reference_dir), VerifyConfig()

    def check(self, path: str, fmt: str, quantization: str) -> dict:
        from pathlib import Path

        from edgedistill.exporters.verify import check_artifact

        return check_artifact(self.model, self.tokenizer, Path(path), fmt, quantization, self.settings)


def peak_rss_kib() -> int:
    """This process image's peak resident memory: VmHWM belongs to the address space exec
    made, while ru_maxrss keeps the forking parent's peak (pytest's, GBs) across exec."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # not Linux: the best there is


if __name__ == "__main__":
    main(*sys.argv[1:4])
