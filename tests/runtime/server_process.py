"""Start ``edgedistill serve`` as a real process on an ephemeral 127.0.0.1 port."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ADDRESS = re.compile(r"serving .* on (http://127\.0\.0\.1:\d+)")


class ServerProcess:
    def __init__(self, path: Path, *options: str):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edgedistill.cli", "serve", str(path), "--port", "0", *options],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for line in self.process.stdout:  # the server prints its address once it listens
            if match := ADDRESS.search(line):
                self.url = match.group(1)
                break
        else:
            raise RuntimeError(f"the server did not start:\n{self.process.stderr.read()}")

    def terminate(self, timeout: float = 60) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@contextmanager
def running_server(path: Path, *options: str) -> Iterator[ServerProcess]:
    server = ServerProcess(path, *options)
    try:
        yield server
    finally:
        server.kill()
