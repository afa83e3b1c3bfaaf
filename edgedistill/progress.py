"""Progress lines of long phases (distillation steps, teacher answers, bench measurements):
plain lines on stderr, flushed at once, so a build log read in a CI job or through ``tee``
shows them as they happen and stdout stays for results."""

from __future__ import annotations

import sys
import time


def say(message: str) -> None:
    """One progress line on stderr."""
    print(message, file=sys.stderr, flush=True)


class Every:
    """True at most once per ``seconds`` (and always when ``final``): how often a phase
    reporting after each item prints a line."""

    def __init__(self, seconds: float):
        self.seconds, self._last = seconds, float("-inf")

    def __call__(self, final: bool = False) -> bool:
        now = time.monotonic()
        if final or now - self._last >= self.seconds:
            self._last = now
            return True
        return False
