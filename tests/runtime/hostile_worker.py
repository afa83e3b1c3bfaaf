"""Load and run damaged artifacts in a process of their own: ``python -m tests.runtime.hostile_worker CASES OUT``.

CASES: a JSON list of {"id", "path"}. For each, ``edgedistill.runtime.load`` then a two-token
``generate``; the outcome ("ok", or the exception's type and message) is appended to OUT as
one JSON line *before* the next case starts, and "started" lines before each case, so a
crash of the whole process (a segfault inside a runtime) still names the case that did it.
The last line holds the process's peak resident memory.
"""

from __future__ import annotations

import json
import resource
import sys


def main(cases_file: str, out_file: str) -> None:
    from edgedistill.runtime import load

    cases = json.loads(open(cases_file, encoding="utf-8").read())
    with open(out_file, "a", encoding="utf-8") as out:
        for case in cases:
            out.write(json.dumps({"started": case["id"]}) + "\n")
            out.flush()
            try:
                model = load(case["path"], threads=1)
                model.generate("The", max_tokens=2, temperature=0.0)
                outcome = {"id": case["id"], "outcome": "ok"}
            except Exception as exc:  # what the test judges: the type and its message
                kind = "ValueError" if isinstance(exc, ValueError) else type(exc).__name__  # what the CLI one-lines
                outcome = {"id": case["id"], "outcome": kind, "type": type(exc).__name__, "message": str(exc)}
            out.write(json.dumps(outcome) + "\n")
            out.flush()
        out.write(json.dumps({"peak_rss_mib": peak_rss_kib() / 1024}) + "\n")


def peak_rss_kib() -> int:
    """This process image's peak resident memory: VmHWM belongs to the address space exec
    made, while ru_maxrss keeps the forking parent's peak (pytest's, GBs) across exec."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # not Linux: the best there is


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
